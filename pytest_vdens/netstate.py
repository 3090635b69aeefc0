"""A text snapshot of a namespace's network, for the report of a failed test.

gather() runs inside the namespace (Namespace.call): rtnetlink (pyroute2)
gives links, addresses, routes and neighbours; /proc/net gives the sockets.
/proc/net is /proc/self/net, the reading task's network namespace, whichever
/proc is mounted. It never raises: a part that fails reads "(could not ...)".
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Section and line caps: a report stays readable even if a test opened many sockets.
MAX_LINES = 40

_IFF_UP, _IFF_RUNNING, _IFF_LOWER_UP = 0x1, 0x40, 0x10000
# IFA_F_*, as `ip addr` names them; "permanent" is the usual case and left out.
_ADDR_FLAGS = ((0x01, "secondary"), (0x02, "nodad"), (0x04, "optimistic"),
               (0x08, "dadfailed"), (0x20, "deprecated"), (0x40, "tentative"),
               (0x200, "noprefixroute"))
_IFA_F_PERMANENT = 0x80
_NUD = ((0x01, "INCOMPLETE"), (0x02, "REACHABLE"), (0x04, "STALE"), (0x08, "DELAY"),
        (0x10, "PROBE"), (0x20, "FAILED"), (0x40, "NOARP"), (0x80, "PERMANENT"))
_NUD_NOARP = 0x40
_NTF_ROUTER = 0x80
_RT_TABLE_MAIN, _RT_TABLE_LOCAL = 254, 255
_RTPROT_KERNEL = 2
_RTN = {2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
        7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
_TCP_STATES = {1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1",
               5: "FIN-WAIT-2", 6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT",
               9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}
_TCP_LISTEN, _UDP_UNCONNECTED, _UDP_CONNECTED = 10, 7, 1
_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 255: "raw"}


def preload() -> None:
    """Import pyroute2 here, so that children forked later (Namespace.call) have it.

    Importing it costs ~0.15 s, which each gather() in a fresh child would
    otherwise pay again. It starts no thread, so later setns() still works.
    """
    try:
        import pyroute2  # noqa: F401
    except Exception:  # gather() reports it
        pass


def gather(indent: str = "  ") -> str:
    """The network state of this process's namespace, as aligned text; never raises.

    Each line starts with `indent`, to nest under a heading naming the namespace.
    """
    try:
        lines = _gather()
    except Exception as e:  # pragma: no cover - each part already catches its own
        lines = [f"(could not gather the network state: {_error(e)})"]
    return "\n".join(indent + line for line in lines)


def _gather() -> list[str]:
    out: list[str] = []
    try:
        from pyroute2 import IPRoute

        ipr: Any = IPRoute()
    except Exception as e:
        for what in ("links", "addresses", "routes", "neighbours"):
            out.append(f"{what}: (could not read {what}: {_error(e)})")
    else:
        names: dict[int, str] = {}
        out += _section("links", lambda: _links(ipr, names))
        out += _section("addresses", lambda: _addresses(ipr, names))
        out += _section("routes", lambda: _routes(ipr, names))
        out += _section("neighbours", lambda: _neighbours(ipr, names))
        try:
            ipr.close()
        except Exception:  # what it read is all we need
            pass
    try:
        listening, connected, problems = _sockets()
    except Exception as e:  # pragma: no cover - it catches what a file or line does
        listening, connected, problems = [], [], [f"(could not read /proc/net: {_error(e)})"]
    out += _section("listening", lambda: problems + listening)
    if connected:  # e.g. SYN-SENT: the peer never answered; a large send-q: it never read
        out += _section("connections", lambda: connected)
    return out


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip().removesuffix(":")


def _section(title: str, rows: Callable[[], Sequence[Sequence[str] | str]]) -> list[str]:
    """'title:' and its rows aligned in columns; a row that is a str is a note."""
    try:
        got = rows()
    except Exception as e:
        return [f"{title}: (could not read {title}: {_error(e)})"]
    if not got:
        return [f"{title}: none"]
    more = len(got) - MAX_LINES
    if more > 0:
        got = [*got[:MAX_LINES], f"... and {more} more"]
    return [f"{title}:", *("  " + line for line in _align(got))]


def _align(rows: Iterable[Sequence[str] | str]) -> list[str]:
    rows = list(rows)
    tables = [r for r in rows if not isinstance(r, str)]
    widths: dict[int, int] = {}
    for row in tables:
        for i, cell in enumerate(row):
            widths[i] = max(widths.get(i, 0), len(cell))
    return [row if isinstance(row, str) else
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]


# -- rtnetlink ---------------------------------------------------------------------


def _dev(names: dict[int, str], index: object) -> str:
    return names.get(index, f"#{index}") if isinstance(index, int) else "?"


def _links(ipr: Any, names: dict[int, str]) -> list[list[str]]:
    rows = []
    for msg in sorted(ipr.get_links(), key=lambda m: m["index"]):
        index = msg["index"]
        name = msg.get_attr("IFLA_IFNAME") or f"#{index}"
        names[index] = name
        flags = msg["flags"]
        state = ",".join(f for bit, f in ((_IFF_UP, "UP"), (_IFF_LOWER_UP, "LOWER_UP"))
                         if flags & bit) or "DOWN"
        if flags & _IFF_UP and not flags & _IFF_RUNNING:
            state += ",NO-CARRIER"
        carrier = msg.get_attr("IFLA_CARRIER")
        stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
        row = [name, f"#{index}", state, str(msg.get_attr("IFLA_OPERSTATE") or "?"),
               f"mtu {msg.get_attr('IFLA_MTU')}", str(msg.get_attr("IFLA_ADDRESS") or "-"),
               "carrier " + ("?" if carrier is None else "on" if carrier else "off")]
        for way in ("rx", "tx"):
            cell = (f"{way} {stats.get(f'{way}_packets', '?')} pkt "
                    f"{stats.get(f'{way}_bytes', '?')} B {stats.get(f'{way}_dropped', '?')} drop")
            if stats.get(f"{way}_errors"):
                cell += f" {stats[f'{way}_errors']} err"
            row.append(cell)
        master = msg.get_attr("IFLA_MASTER")
        if master:
            row.append(f"master #{master}")
        rows.append(row)
    for row in rows:  # masters by name, now that all are known
        if row[-1].startswith("master #"):
            row[-1] = "master " + _dev(names, int(row[-1][8:]))
    return rows


def _addresses(ipr: Any, names: dict[int, str]) -> list[list[str]]:
    rows = []
    for msg in sorted(ipr.get_addr(), key=lambda m: (m["index"], m["family"])):
        flags = msg.get_attr("IFA_FLAGS")
        flags = msg["flags"] if flags is None else flags  # IFA_FLAGS holds all 32 bits
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        words = [name for bit, name in _ADDR_FLAGS if flags & bit]
        if not flags & _IFA_F_PERMANENT:
            words.insert(0, "dynamic")  # from SLAAC/DHCP: it may expire
        peer = msg.get_attr("IFA_ADDRESS")
        if peer and peer != address:
            words.insert(0, f"peer {peer}")
        rows.append([_dev(names, msg["index"]),
                     "inet6" if msg["family"] == socket.AF_INET6 else "inet",
                     f"{address}/{msg['prefixlen']}", " ".join(words)])
    return rows


def _routes(ipr: Any, names: dict[int, str]) -> list[list[str]]:
    """Routes of every table but `local` (one per address, implied by addresses)."""
    rows = []
    for msg in ipr.get_routes():
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        kind = msg["type"]
        dst = msg.get_attr("RTA_DST")
        dst = f"{dst}/{msg['dst_len']}" if dst else "default"
        if table == _RT_TABLE_LOCAL or (
                # each IPv6 link has one: noise
                dst == "fe80::/64" and msg["proto"] == _RTPROT_KERNEL and kind == 1):
            continue
        gateways = [msg.get_attr("RTA_GATEWAY")]
        devs = [_dev(names, msg.get_attr("RTA_OIF"))] if msg.get_attr("RTA_OIF") else []
        for hop in msg.get_attr("RTA_MULTIPATH") or ():  # ECMP: one gateway/device per hop
            gateways.append(hop.get_attr("RTA_GATEWAY"))
            devs.append(_dev(names, hop["oif"]))
        via = ",".join(g for g in gateways if g)
        metric = msg.get_attr("RTA_PRIORITY")
        extra = []
        if kind in _RTN:
            extra.append(_RTN[kind])
        if table != _RT_TABLE_MAIN:
            extra.append(f"table {table}")
        src = msg.get_attr("RTA_PREFSRC")
        if src and msg["proto"] != _RTPROT_KERNEL:  # the kernel's are the address itself
            extra.append(f"src {src}")
        rows.append([dst, f"via {via}" if via else "", f"dev {','.join(devs)}" if devs else "",
                     "" if metric is None else f"metric {metric}", " ".join(extra)])
    return rows


def _neighbours(ipr: Any, names: dict[int, str]) -> list[list[str]]:
    """ARP and NDP entries; NOARP ones (multicast, derived from the address) are left out."""
    rows = []
    for msg in ipr.get_neighbours():
        state = msg["state"]
        if state & _NUD_NOARP:
            continue
        words = [name for bit, name in _NUD if state & bit] or ["NONE"]
        if msg["flags"] & _NTF_ROUTER:
            words.append("router")
        rows.append([str(msg.get_attr("NDA_DST")), f"dev {_dev(names, msg['ifindex'])}",
                     f"lladdr {msg.get_attr('NDA_LLADDR') or '-'}", " ".join(words)])
    return rows


# -- /proc/net -----------------------------------------------------------------------


def _address(hexaddr: str) -> str:
    """'0100000A:1F90' -> '10.0.0.1:8080'. The kernel prints each 32-bit word of the
    address in host byte order (an IPv6 address as four such words); the port as a number."""
    host, port = hexaddr.split(":")
    packed = b"".join(int(host[i:i + 8], 16).to_bytes(4, sys.byteorder)
                      for i in range(0, len(host), 8))
    ip = ipaddress.ip_address(packed)
    return f"[{ip}]:{int(port, 16)}" if ip.version == 6 else f"{ip}:{int(port, 16)}"


def _proc_sockets(kind: str) -> list[list[str]]:
    """Rows of /proc/net/<kind>, split, the header line dropped."""
    with open(f"/proc/net/{kind}") as f:
        return [line.split() for line in f.readlines()[1:] if line.strip()]


def _sockets() -> tuple[list[list[str]], list[list[str]], list[str]]:
    """Listening (TCP LISTEN, unconnected UDP, raw) and connected sockets, and
    notes on the files that could not be read."""
    listening: list[list[str]] = []
    connected: list[list[str]] = []
    problems = []
    for kind in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            rows = _proc_sockets(kind)
        except FileNotFoundError:  # e.g. IPv6 disabled in the kernel
            continue
        except Exception as e:
            problems.append(f"(could not read /proc/net/{kind}: {_error(e)})")
            continue
        for row in rows:
            try:
                local, remote, state = _address(row[1]), _address(row[2]), int(row[3], 16)
                sendq, recvq = (int(q, 16) for q in row[4].split(":"))
            except (IndexError, ValueError) as e:
                problems.append(f"(could not read a line of /proc/net/{kind}: {_error(e)})")
                continue
            queues = []  # listening TCP: connections not accepted; UDP: bytes not read
            if recvq:
                queues.append(f"recv-q {recvq}")
            if sendq:
                queues.append(f"send-q {sendq}")
            if kind.startswith(("udp", "raw")) and len(row) > 12 and row[12] not in ("0", ""):
                queues.append(f"drops {row[12]}")
            if kind.startswith("raw"):  # its "port" is the IP protocol
                host = local.rsplit(":", 1)[0]
                proto = int(row[1].rsplit(":", 1)[1], 16)
                listening.append([kind, f"{host} proto {_protocol(proto)}", " ".join(queues)])
            elif (kind.startswith("tcp") and state == _TCP_LISTEN) or (
                    kind.startswith("udp") and state == _UDP_UNCONNECTED):
                listening.append([kind, local, " ".join(queues)])
            else:
                name = _TCP_STATES.get(state, f"state {state}") if kind.startswith("tcp") \
                    else "connected" if state == _UDP_CONNECTED else f"state {state}"
                connected.append([kind, local, f"-> {remote}", name, " ".join(queues)])
    return listening, connected, problems


def _protocol(number: int) -> str:
    name = _PROTOCOLS.get(number)
    return f"{number} ({name})" if name else str(number)
