"""Packet capture in the helper: an interface's frames into a pcap file that keeps the last few MB.

Classic pcap (LINKTYPE_ETHERNET, microseconds), what tcpdump, tshark and
Wireshark all read. The file is made with the first frame (or when asked
for): most tests' interfaces carry none, and then cost nothing on disk.
Records gather in a buffer written out at 64 KB, and by flush() (the helper
flushes when idle and when asked): a write() per frame would halve the
forwarding rate. The cap is a ring of two halves: when the
file reaches half the limit it becomes `.old` and a new one starts; keeping
them joins the two, the older first, so the last half to whole limit survives.
"""

from __future__ import annotations

import os
import shutil
import struct
import time

LIMIT = 4 << 20  # bytes per interface
SNAPLEN = 262144
_GLOBAL = struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1)
_RECORD = struct.Struct("=IIII")
FLUSH_AT = 64 << 10


class Capture:
    """One interface's capture file, open for writing."""

    def __init__(self, path: str, limit: int = LIMIT) -> None:
        self.path = path
        self.half = max(limit // 2, 4096)
        self.fd = -1  # the file is made with the first frame, or when asked for
        self.size = 0
        self.pending = bytearray()
        self.closed = False
        self.made = False

    def _start(self) -> None:
        self.made = True
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.write(self.fd, _GLOBAL)
        self.size = len(_GLOBAL)

    def write(self, frame: memoryview) -> None:
        n = len(frame)
        sec, nsec = divmod(time.time_ns(), 1_000_000_000)
        pending = self.pending
        pending += _RECORD.pack(sec, nsec // 1000, n, n)
        pending += frame
        if len(pending) >= FLUSH_AT:
            self.flush()

    def flush(self, make: bool = False) -> None:
        """Write out what is recorded; with `make`, make the file even if nothing is."""
        if self.closed or not (self.pending or make and self.fd < 0):
            return
        if self.fd < 0:
            self._start()
        try:
            os.write(self.fd, self.pending)
            self.size += len(self.pending)
        except OSError:  # a full disk must not stop the traffic
            pass
        self.pending.clear()
        if self.size >= self.half:
            os.close(self.fd)
            os.replace(self.path, self.path + ".old")
            self._start()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def keep(self, dest: str) -> None:
        """Close, and leave the capture (both halves, joined) at `dest`."""
        self.close()
        if not self.made:  # no frame: a file with no packets
            with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
                      "wb") as out:
                out.write(_GLOBAL)
            return
        old = self.path + ".old"
        if not os.path.exists(old):
            shutil.move(self.path, dest)
            return
        with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
                  "wb") as out:
            with open(old, "rb") as f:
                shutil.copyfileobj(f, out)
            with open(self.path, "rb") as f:
                f.seek(len(_GLOBAL))
                shutil.copyfileobj(f, out)
        self.discard()

    def discard(self) -> None:
        self.close()
        for path in (self.path, self.path + ".old"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
