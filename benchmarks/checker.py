"""Reachability checker: one host pings many, until every one has answered.

Runs inside a namespace (a pytest-vdens one or a vdens one: the same script for
both sides), as `python checker.py PREFIX FIRST COUNT [TIMEOUT]`: the targets are
PREFIX.(i // 256).(i % 256) for i in FIRST..FIRST+COUNT-1 (a /16). It prints
"ready", waits for "go" on stdin, then sends ICMP echo requests from one raw
socket, resending to each silent target every 0.2 s, and prints one JSON line:
{"answered", "total", "elapsed", "missing"}. Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"vbench-checker-payload"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload


def main() -> None:
    prefix, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    targets = {f"{prefix}.{i // 256}.{i % 256}": i for i in range(first, first + count)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    ident = os.getpid() & 0xFFFF
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    t0 = time.monotonic()
    pending = dict(targets)
    last: dict[str, float] = {}
    while pending and time.monotonic() - t0 < timeout:
        now = time.monotonic()
        for ip, seq in pending.items():
            if now - last.get(ip, -1.0) >= 0.2:
                last[ip] = now
                try:
                    sock.sendto(echo_request(ident, seq & 0xFFFF), (ip, 0))
                except OSError:  # unresolved neighbour, full queue: try again later
                    pass
        select.select([sock], [], [], 0.01)
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                break
            ihl = (data[0] & 0x0F) * 4
            if len(data) >= ihl + 8 and data[ihl] == 0:  # echo reply
                rid = struct.unpack("!H", data[ihl + 4:ihl + 6])[0]
                if rid == ident:
                    pending.pop(addr[0], None)
    print(json.dumps({"answered": count - len(pending), "total": count,
                      "elapsed": time.monotonic() - t0, "missing": sorted(pending)[:10]}),
          flush=True)


if __name__ == "__main__":
    main()
