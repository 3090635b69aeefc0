"""Reading pcap files and decoding their Ethernet frames into one short line each.

Its one job: turn the helper's captures into the few lines a failure report
shows, e.g.::

    14:22:23.622390 ns0/vde0 out IPv4 10.0.0.1:40028 > 10.0.0.2:8080 TCP [S] seq=614606659 len=0

Decoded here from the header bytes (no dependency): ARP, IPv4, IPv6 (simple
extension headers skipped), TCP, UDP, ICMP, ICMPv6, 802.1Q tags. A line names
the protocol first, then addresses, then what the protocol says; the words
follow tcpdump's where it has one ("who-has", "is-at", TCP flags "[S.]").
MAC addresses are left out where the direction column and the IP addresses
say enough; they are shown where they are the point (an ARP reply's "is-at",
neighbor advertisements) and for frames that are neither ARP nor IP, where
they are the only addresses there are. IPv6 addresses with a port are
bracketed, "[fd00::1]:5353", as in URLs: "fd00::1:5353" could be either.
A frame cut short ends its line with "truncated"; no frame makes summary() raise.
"""

from __future__ import annotations

import collections
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

LINKTYPE_ETHERNET = 1

# magic as read little-endian -> (byte order, fraction units per second)
_MAGICS = {0xA1B2C3D4: ("<", 1_000_000), 0xD4C3B2A1: (">", 1_000_000),
           0xA1B23C4D: ("<", 1_000_000_000), 0x4D3CB2A1: (">", 1_000_000_000)}
_MAGIC_BYTES = [m.to_bytes(4, "little") for m in _MAGICS]
_MAX_RECORD = 1 << 26  # a record claiming more is corruption, not a frame


def _global_header(data: bytes, at: int) -> tuple[struct.Struct, int, int] | None:
    """The record format, units per second and link type of a global header at `at`."""
    if len(data) - at < 24:
        return None
    magic = int.from_bytes(data[at:at + 4], "little")
    if magic not in _MAGICS:
        return None
    order, units = _MAGICS[magic]
    major, minor, _, _, _, linktype = struct.unpack_from(order + "HHiIII", data, at + 4)
    if (major, minor) != (2, 4):
        return None
    return struct.Struct(order + "IIII"), units, linktype


def read_pcap(path: str | Path, last: int | None = None) -> list[tuple[float, bytes]]:
    """The (timestamp, frame) records of a pcap file of Ethernet frames, oldest first.

    Reads either byte order, microsecond or nanosecond timestamps. A file
    still being written is fine: an incomplete last record (or header) is
    left out. A global header met again where a record would start (files
    joined with cat) is skipped. `last` keeps only the last N records; the
    file is read once either way. ValueError if the file is not a pcap of
    Ethernet frames.
    """
    if last is not None and last < 0:
        raise ValueError(f"last={last}: give a count >= 0, or None for all")
    data = Path(path).read_bytes()
    header = _global_header(data, 0)
    if header is None:
        if len(data) < 24 and any(m.startswith(data[:4]) for m in _MAGIC_BYTES):
            return []  # the writer has not finished the global header
        raise ValueError(f"{path}: not a pcap file version 2.4 (starts {data[:8].hex()})")
    # offsets only, so that a big file with a small `last` copies just N frames
    spans: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=last)
    at = 24
    while header is not None:
        record, units, linktype = header
        if linktype != LINKTYPE_ETHERNET:
            raise ValueError(f"{path}: link type {linktype}, not Ethernet ({LINKTYPE_ETHERNET})")
        header = None
        while len(data) - at >= 16:
            sec, frac, incl, _ = record.unpack_from(data, at)
            if sec in _MAGICS and any(data.startswith(m, at) for m in _MAGIC_BYTES):  # joined
                if len(data) - at < 24:
                    break  # a header being written
                if (header := _global_header(data, at)) is not None:
                    at += 24
                    break
            if incl > _MAX_RECORD:
                raise ValueError(f"{path}: corrupt record at byte {at} ({incl} bytes)")
            if len(data) - at - 16 < incl:
                break  # a record being written
            spans.append((sec + frac / units, at + 16, at + 16 + incl))
            at += 16 + incl
    return [(ts, data[start:end]) for ts, start, end in spans]


# -- one frame, one line -------------------------------------------------------------------


class _Short(Exception):
    """The frame ends before a header it announces."""


class _Frame:
    """Bounds-checked reads of a frame's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def take(self, at: int, n: int) -> bytes:
        if at < 0 or at + n > len(self.data):
            raise _Short
        return self.data[at:at + n]

    def u8(self, at: int) -> int:
        return self.take(at, 1)[0]

    def u16(self, at: int) -> int:
        return int.from_bytes(self.take(at, 2), "big")

    def u32(self, at: int) -> int:
        return int.from_bytes(self.take(at, 4), "big")


def _mac(b: bytes) -> str:
    return b.hex(":")


def _ip4(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, b)


def _ip6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)  # the same text as tcpdump's


_IP_PROTOS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH",
              58: "ICMPv6", 89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP"}
_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"),
              (0x40, "E"), (0x80, "W"))  # tcpdump's order
_UNREACH4 = {0: "net", 1: "host", 2: "protocol", 3: "port", 4: "frag-needed",
             5: "source-route-failed", 6: "net-unknown", 7: "host-unknown", 8: "host-isolated",
             9: "net-prohibited", 10: "host-prohibited", 11: "net-tos", 12: "host-tos",
             13: "admin-prohibited", 14: "precedence-violation", 15: "precedence-cutoff"}
_UNREACH6 = {0: "no-route", 1: "admin-prohibited", 2: "beyond-scope", 3: "address", 4: "port",
             5: "policy", 6: "reject-route"}
_ICMP4 = {4: "source quench", 9: "router advertisement", 10: "router solicitation",
          12: "parameter problem", 13: "timestamp request", 14: "timestamp reply"}
_ICMP6 = {4: "parameter problem", 130: "multicast listener query",
          131: "multicast listener report", 132: "multicast listener done",
          133: "router solicitation", 137: "redirect", 143: "multicast listener report v2"}
_EXT6 = {0, 43, 60}  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _tcp(f: _Frame, at: int, payload: int, out: list[str]) -> None:
    out.append("TCP")
    flags = f.u8(at + 13)
    out.append("[" + ("".join(c for bit, c in _TCP_FLAGS if flags & bit) or "none") + "]")
    out.append(f"seq={f.u32(at + 4)}")
    if flags & 0x10:
        out.append(f"ack={f.u32(at + 8)}")
    out.append(f"len={max(payload - (f.u8(at + 12) >> 4) * 4, 0)}")


def _quoted(f: _Frame, at: int, v6: bool) -> str:
    """What an ICMP error quotes: the protocol and destination of the packet it is about."""
    if v6:
        proto, dst, l4 = f.u8(at + 6), _ip6(f.take(at + 24, 16)), at + 40
        while proto in _EXT6:
            proto, l4 = f.u8(l4), l4 + (f.u8(l4 + 1) + 1) * 8
    else:
        proto, dst, l4 = f.u8(at + 9), _ip4(f.take(at + 16, 4)), at + (f.u8(at) & 0xF) * 4
    name = _IP_PROTOS.get(proto, f"proto {proto}")
    if proto in (6, 17):
        return f"{name} {_endpoint(dst, f.u16(l4 + 2))}"
    return f"{name} {dst}"


def _icmp4(f: _Frame, at: int, out: list[str]) -> None:
    kind, code = f.u8(at), f.u8(at + 1)
    out.append("ICMP")
    if kind in (0, 8):
        out += ["echo", "reply" if kind == 0 else "request",
                f"id={f.u16(at + 4)}", f"seq={f.u16(at + 6)}"]
    elif kind == 3:
        out += ["unreachable", _UNREACH4.get(code, f"code={code}")]
        if code == 4:
            out.append(f"mtu={f.u16(at + 6)}")
        out += ["for", _quoted(f, at + 8, v6=False)]
    elif kind == 11:
        out += ["time exceeded", "ttl" if code == 0 else "reassembly",
                "for", _quoted(f, at + 8, v6=False)]
    elif kind == 5:
        out += ["redirect", "to", _ip4(f.take(at + 4, 4)), "for", _quoted(f, at + 8, v6=False)]
    elif kind in _ICMP4:
        out.append(_ICMP4[kind])
    else:
        out.append(f"type={kind} code={code}")


def _options6(f: _Frame, at: int, end: int) -> Iterator[tuple[int, int]]:
    """Neighbor discovery options up to `end`: (type, offset) each."""
    while at < end:
        kind, size = f.u8(at), f.u8(at + 1) * 8
        if size == 0:  # malformed: it would loop forever
            return
        yield kind, at
        at += size


def _icmp6(f: _Frame, at: int, end: int, out: list[str]) -> None:
    kind, code = f.u8(at), f.u8(at + 1)
    out.append("ICMPv6")
    if kind in (128, 129):
        out += ["echo", "reply" if kind == 129 else "request",
                f"id={f.u16(at + 4)}", f"seq={f.u16(at + 6)}"]
    elif kind == 1:
        out += ["unreachable", _UNREACH6.get(code, f"code={code}"),
                "for", _quoted(f, at + 8, v6=True)]
    elif kind == 2:
        out += ["packet too big", f"mtu={f.u32(at + 4)}", "for", _quoted(f, at + 8, v6=True)]
    elif kind == 3:
        out += ["time exceeded", "hop-limit" if code == 0 else "reassembly", "for",
                _quoted(f, at + 8, v6=True)]
    elif kind == 135:
        out += ["neighbor solicitation", "who-has", _ip6(f.take(at + 8, 16))]
    elif kind == 136:
        out += ["neighbor advertisement", _ip6(f.take(at + 8, 16))]
        for opt, o in _options6(f, at + 24, end):
            if opt == 2:  # target link-layer address: what the neighbor answers
                out += ["is-at", _mac(f.take(o + 2, 6))]
                break
    elif kind == 134:
        out.append("router advertisement")
        f.take(at, 16)  # the fixed part must be there before its options
        for opt, o in _options6(f, at + 16, end):
            if opt == 3:  # prefix information
                out += ["prefix", f"{_ip6(f.take(o + 16, 16))}/{f.u8(o + 2)}"]
    elif kind in _ICMP6:
        out.append(_ICMP6[kind])
    else:
        out.append(f"type={kind} code={code}")


def _transport(f: _Frame, proto: int, at: int, payload: int, end: int,
               src: str, dst: str, out: list[str]) -> None:
    """The addresses, and what the protocol at `at` says (`payload` bytes after the IP headers)."""
    if proto in (6, 17):
        try:
            sport, dport = f.u16(at), f.u16(at + 2)
        except _Short:
            out += [src, ">", dst, _IP_PROTOS[proto]]
            raise
        out += [_endpoint(src, sport), ">", _endpoint(dst, dport)]
        if proto == 6:
            _tcp(f, at, payload, out)
        else:
            out += ["UDP", f"len={max(f.u16(at + 4) - 8, 0)}"]
        return
    out += [src, ">", dst]
    if proto == 1:
        _icmp4(f, at, out)
    elif proto == 58:
        _icmp6(f, at, end, out)
    else:
        out += [_IP_PROTOS.get(proto, f"proto {proto}"), f"len={payload}"]


def _ipv4(f: _Frame, at: int, out: list[str]) -> None:
    out.append("IPv4")
    first = f.u8(at)
    ihl = (first & 0xF) * 4
    if first >> 4 != 4 or ihl < 20:
        out.append(f"bad header (version {first >> 4}, ihl {ihl})")
        return
    total, ident, frag, proto = f.u16(at + 2), f.u16(at + 4), f.u16(at + 6), f.u8(at + 9)
    total = total or len(f.data) - at  # 0: GSO's big TCP, caught before segmentation
    src, dst = _ip4(f.take(at + 12, 4)), _ip4(f.take(at + 16, 4))
    payload = max(total - ihl, 0)
    more, offset = bool(frag & 0x2000), (frag & 0x1FFF) * 8
    note = [f"frag id={ident} off={offset}{'+' if more else ''}"] if more or offset else []
    if offset:  # no transport header in this piece
        out += [src, ">", dst, _IP_PROTOS.get(proto, f"proto {proto}"), *note, f"len={payload}"]
        return
    _transport(f, proto, at + ihl, payload, at + max(total, ihl), src, dst, out)
    out += note


def _ipv6(f: _Frame, at: int, out: list[str]) -> None:
    out.append("IPv6")
    if f.u8(at) >> 4 != 6:
        out.append(f"bad header (version {f.u8(at) >> 4})")
        return
    payload, proto = f.u16(at + 4), f.u8(at + 6)
    src, dst = _ip6(f.take(at + 8, 16)), _ip6(f.take(at + 24, 16))
    at += 40
    end = at + payload if payload else len(f.data)  # 0: a jumbogram, or GSO's big TCP
    note: list[str] = []
    for _ in range(8):  # a chain longer than that is not worth following in a summary
        if proto in _EXT6:
            size = (f.u8(at + 1) + 1) * 8
        elif proto == 51:  # AH: (len + 2) * 4 bytes
            size = (f.u8(at + 1) + 2) * 4
        elif proto == 44:  # fragment header
            frag, ident = f.u16(at + 2), f.u32(at + 4)
            offset, more = frag & 0xFFF8, bool(frag & 1)
            note = [f"frag id={ident} off={offset}{'+' if more else ''}"]
            size = 8
            if offset:  # no transport header in this piece
                inner = f.u8(at)
                out += [src, ">", dst, _IP_PROTOS.get(inner, f"proto {inner}"), *note,
                        f"len={max(end - at - 8, 0)}"]
                return
        elif proto == 59:
            out += [src, ">", dst, "no next header"]
            return
        else:
            break
        proto = f.u8(at)
        at += size
    else:
        out += [src, ">", dst, "extension headers too many"]
        return
    _transport(f, proto, at, max(end - at, 0), end, src, dst, out)
    out += note


def _arp(f: _Frame, at: int, out: list[str]) -> None:
    out.append("ARP")
    htype, ptype, hlen, plen = f.u16(at), f.u16(at + 2), f.u8(at + 4), f.u8(at + 5)
    op = f.u16(at + 6)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        out.append(f"htype={htype} ptype=0x{ptype:04x} op={op}")
        return
    sha, spa = f.take(at + 8, 6), _ip4(f.take(at + 14, 4))
    tpa = _ip4(f.take(at + 24, 4))
    if op == 1:
        out += ["who-has", tpa, "tell", spa]
    elif op == 2:
        out += [spa, "is-at", _mac(sha)]
    else:
        out.append(f"op={op} {spa} > {tpa}")


_VLANS = {0x8100, 0x88A8, 0x9100}


def summary(frame: bytes | bytearray | memoryview) -> str:
    """One line saying what an Ethernet frame is; never raises."""
    f = _Frame(bytes(frame))
    out: list[str] = []
    try:
        at, kind = 12, f.u16(12)
        for _ in range(4):  # tags stacked deeper than QinQ are not worth a summary
            if kind not in _VLANS:
                break
            out.append(f"vlan {f.u16(at + 2) & 0xFFF}")
            at += 4
            kind = f.u16(at)
        at += 2
        if kind == 0x0800:
            _ipv4(f, at, out)
        elif kind == 0x86DD:
            _ipv6(f, at, out)
        elif kind == 0x0806:
            _arp(f, at, out)
        else:  # neither IP nor ARP: the MACs are all the addresses there are
            macs = [_mac(f.take(6, 6)), ">", _mac(f.take(0, 6))]
            if kind <= 1500:  # a length, not a type: 802.3 with LLC
                out += ["802.3", *macs, f"len={kind}"]
            else:
                out += [f"ethertype 0x{kind:04x}", *macs, f"len={len(f.data) - at}"]
    except _Short:
        bare = all(word.startswith("vlan ") for word in out)
        out += ["truncated", f"len={len(f.data)}"] if bare else ["truncated"]
    return " ".join(out)


# -- several captures, merged ----------------------------------------------------------------


def _clock(ts: float) -> str:
    sec, usec = divmod(round(ts * 1_000_000), 1_000_000)
    return time.strftime("%H:%M:%S", time.localtime(sec)) + f".{usec:06d}"


def summarize(captures: Mapping[str, str | Path | Sequence[str | Path]], last: int = 20,
              own_macs: Mapping[str, str] | None = None) -> list[str]:
    """The last `last` frames of several captures, oldest first, one line each.

    `captures` maps a label ("vde0", "ns1/vde0") to a pcap file, or to several
    (a capture's older half first). Lines are
    "HH:MM:SS.ffffff LABEL DIR SUMMARY" in local time, labels padded to the
    longest. DIR is "out" when the frame's source MAC is own_macs[LABEL]
    (the interface's own), "in" when not, "?" when own_macs has no MAC for
    the label; without own_macs there is no DIR column. A file that does not
    exist (yet) contributes nothing.
    """
    frames: list[tuple[float, str, bytes]] = []
    for label, paths in captures.items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            try:
                records = read_pcap(path, last=last)
            except FileNotFoundError:
                continue
            frames += [(ts, label, frame) for ts, frame in records]
    frames.sort(key=lambda item: item[0])  # stable: equal times keep their file's order
    width = max((len(label) for label in captures), default=0)
    mine = {label: mac.lower().replace("-", ":") for label, mac in (own_macs or {}).items()}
    lines = []
    for ts, label, frame in frames[max(len(frames) - last, 0):]:
        cols = [_clock(ts), label.ljust(width)]
        if own_macs is not None:
            own = mine.get(label)
            cols.append("?  " if own is None or len(frame) < 12 else
                        "out" if _mac(frame[6:12]) == own else "in ")
        cols.append(summary(frame))
        lines.append(" ".join(cols))
    return lines
