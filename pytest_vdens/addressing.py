"""Addresses of namespaces on their networks: checking static ones, handing out "auto".

"auto" gives a host an IPv4 address from its network's /24 and an IPv6 ULA from
its /64. An embedded switch is private to one helper, so its addresses are
tracked here. A network outside may be shared by several processes (xdist
workers on one --vdens-switch): its addresses are leased with files that only
one process can create, and a dead helper's leases are taken over.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile

from .errors import ArgumentError

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

SLIRP = (ipaddress.ip_interface("10.0.2.15/24"), ipaddress.ip_address("10.0.2.2"),
         ipaddress.ip_address("10.0.2.3"))


def parse(addr: object, count: int) -> list[list[Interface]] | None:
    """Per interface, the static addresses asked for; None for "auto"."""
    if addr == "auto":
        return None
    items = [addr] if isinstance(addr, str) else addr
    if not isinstance(items, (list, tuple)) or len(items) != count:
        raise ArgumentError(f"addr={addr!r}: give 'auto', or one CIDR per interface "
                            f"({count} here), e.g. ['10.0.0.1/24'] or [['10.0.0.1/24', 'fd00::1/64']]")
    out = []
    for item in items:
        cidrs = [item] if isinstance(item, str) else item
        if not isinstance(cidrs, (list, tuple)) or not all(isinstance(c, str) for c in cidrs):
            raise ArgumentError(f"addr item {item!r} is not a CIDR string or a list of them")
        parsed = []
        for cidr in cidrs:
            try:
                iface = ipaddress.ip_interface(cidr.strip())
            except ValueError:
                raise ArgumentError(f"address {cidr!r} is not a CIDR like '10.0.0.1/24' "
                                    "or 'fd00::1/64'") from None
            if "/" not in cidr:
                raise ArgumentError(f"address {cidr!r} has no prefix length; write e.g. {cidr}/24")
            parsed.append(iface)
        out.append(parsed)
    return out


def parse_mac(mac: object, count: int) -> list[bytes] | None:
    if mac is None:
        return None
    items = [mac] if isinstance(mac, str) else mac
    if not isinstance(items, (list, tuple)) or len(items) != count:
        raise ArgumentError(f"mac={mac!r}: give one MAC per interface ({count} here)")
    out = []
    for item in items:
        try:
            raw = bytes.fromhex(str(item).replace(":", "").replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) != 6 or raw[0] & 1 or not any(raw):
            raise ArgumentError(f"mac {item!r} is not a unicast MAC like '02:00:00:00:00:01'")
        out.append(raw)
    return out


class Network:
    """The addresses in use on one network, as this helper knows them."""

    def __init__(self, url: str, index: int, shared: bool) -> None:
        if shared:
            import hashlib  # here: loading OpenSSL is a tenth of the helper's start-up

            h = hashlib.sha256(url.encode()).digest()
            self.v4 = ipaddress.IPv4Network(f"172.{16 + h[0] % 16}.{h[1]}.0/24")
            self.v6 = ipaddress.IPv6Network(f"fd{h[2]:02x}:{h[3]:02x}{h[4]:02x}:{h[5]:02x}{h[6]:02x}::/64")
            self.leases: str | None = os.path.join(
                tempfile.gettempdir(), f"vdens-leases-{os.geteuid()}", h[:8].hex())
        else:
            self.v4 = ipaddress.IPv4Network(f"10.{100 + index // 256 % 150}.{index % 256}.0/24")
            self.v6 = ipaddress.IPv6Network(f"fd00:7664:656e:{index % 65536:x}::/64")
            self.leases = None
        self.url = url
        self.used: dict[str, int] = {}  # address -> namespace id

    def claim(self, address: str, owner: int) -> bool:
        if address in self.used:
            return False
        if self.leases is not None:
            for _ in range(3):  # another process may remove an empty lease dir meanwhile
                os.makedirs(self.leases, mode=0o700, exist_ok=True)
                _check_private(os.path.dirname(self.leases))
                try:
                    taken = _lease(os.path.join(self.leases, address))
                    break
                except FileNotFoundError:
                    continue
            else:
                taken = False
            if not taken:
                return False
        self.used[address] = owner
        return True

    def claim_static(self, iface: Interface, owner: int) -> None:
        if not self.claim(str(iface.ip), owner):
            holder = self.used.get(str(iface.ip))
            by = f"namespace {holder}" if holder is not None else "another process"
            raise ArgumentError(f"address {iface} is already used on {self.url} by {by}; "
                                "give each host its own address, or use addr='auto'")

    def claim_auto(self, owner: int) -> list[Interface]:
        for host in range(2, 255):  # .1 is left for a router the test may add
            v4 = self.v4.network_address + host
            if self.claim(str(v4), owner):
                v6 = self.v6.network_address + host
                self.used[str(v6)] = owner
                return [ipaddress.ip_interface(f"{v4}/24"), ipaddress.ip_interface(f"{v6}/64")]
        raise ArgumentError(f"addr='auto': no address left in {self.v4} on {self.url} "
                            "(253 hosts); close some namespaces or give static addresses")

    def release(self, owner: int) -> None:
        for address in [a for a, o in self.used.items() if o == owner]:
            del self.used[address]
            if self.leases is not None:
                try:
                    os.unlink(os.path.join(self.leases, address))
                except FileNotFoundError:
                    pass
        if self.leases is not None and not self.used:
            for path in (self.leases, os.path.dirname(self.leases)):
                try:
                    os.rmdir(path)  # the last one out leaves nothing behind
                except OSError:
                    break


def _check_private(path: str) -> None:
    """Refuse a lease directory another user made (or could write): they could steal
    or forge leases."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ArgumentError(f"address lease directory {path!r} is not a private directory of "
                            "this user; remove it, or set TMPDIR to a directory of your own")


def _lease(path: str) -> bool:
    """Take the lease file at path: ours if free, or if its holder is dead."""
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)  # atomic, and the file already names us
                return True
            except FileExistsError:
                try:
                    with open(path) as f:
                        os.kill(int(f.read()), 0)
                    return False
                except ProcessLookupError:
                    try:
                        os.unlink(path)  # a dead holder's: take it over
                    except FileNotFoundError:
                        pass
                except (OSError, ValueError):
                    return False
        return False
    finally:
        os.unlink(tmp)
