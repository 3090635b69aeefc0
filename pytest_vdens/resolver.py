"""DNS resolvers: checking what a user asks for, and the resolv.conf that the zygote
binds over /etc/resolv.conf in a namespace's private mount namespace (_zygote.c)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from .errors import ArgumentError


def parse_addresses(addrs: str | Iterable[str] | None) -> list[str]:
    """Validated nameserver addresses from 'a,b' or a list; [] for none."""
    if addrs is None:
        return []
    if not isinstance(addrs, (str, Iterable)):
        raise ArgumentError(f"resolver={addrs!r} is not an address or a list of addresses; "
                            "use e.g. '9.9.9.9' or ['9.9.9.9', '2620:fe::fe']")
    items = addrs.split(",") if isinstance(addrs, str) else list(addrs)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ArgumentError(f"resolver address {item!r} is not a string; use e.g. '9.9.9.9'")
        try:
            out.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            raise ArgumentError(f"resolver address {item!r} is not an IPv4 or IPv6 address; "
                                "use e.g. '9.9.9.9' or '2620:fe::fe'") from None
    if isinstance(addrs, str) and not out:
        raise ArgumentError(f"resolver {addrs!r} names no address; use e.g. '9.9.9.9,2620:fe::fe'")
    return out


def check_resolvconf(path: str | os.PathLike[str] | None) -> str | None:
    """The absolute path of a user's resolv.conf file, checked to be a readable file."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"resolvconf={path!r} is not a path; give the path of a resolv.conf(5) file")
    p = os.path.abspath(os.fspath(path))
    if "\0" in p:
        raise ArgumentError(f"resolvconf {p!r} contains a NUL byte")
    if not os.path.isfile(p) or not os.access(p, os.R_OK):
        raise ArgumentError(f"resolvconf {os.fspath(path)!r} is not a readable file; "
                            "give the path of a resolv.conf(5) file")
    return p


def render(addrs: list[str]) -> str:
    return "".join(f"nameserver {a}\n" for a in addrs)
