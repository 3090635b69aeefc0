"""Capabilities inside a namespace: which ones, and how they reach exec'd programs."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

from ._prctl import prctl
from .errors import ArgumentError

#: What vdens grants: enough to configure interfaces, bind low ports and ping.
DEFAULT_CAPS = ("net_admin", "net_raw", "net_bind_service", "net_broadcast")

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_LOWER = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return int(max(prctl.ALL_CAPS))


LAST_CAP = _last_cap()


def names() -> list[str]:
    """Every capability name known here, lower case without CAP_."""
    return sorted(prctl.ALL_CAP_NAMES)


def resolve(caps: Iterable[str] | None, sysadm: bool = False) -> tuple[str, ...]:
    """Normalise a capability list: None means vdens's set; names may carry 'CAP_'."""
    if isinstance(caps, str):
        caps = [c for c in caps.replace(",", " ").split() if c]
    elif caps is not None and not isinstance(caps, Iterable):
        raise ArgumentError(f"caps={caps!r} is not a list of capability names; use e.g. "
                            "['net_admin'], or [] for none")
    chosen = list(DEFAULT_CAPS if caps is None else caps)
    if sysadm:
        chosen.append("sys_admin")
    out: list[str] = []
    for cap in chosen:
        if not isinstance(cap, str):
            raise ArgumentError(f"capability {cap!r} is not a name; use e.g. 'net_admin'")
        name = cap.strip().lower().removeprefix("cap_")
        if name not in prctl.ALL_CAP_NAMES:
            raise ArgumentError(f"unknown capability {cap!r}; use names from capabilities(7) "
                                f"such as {', '.join(DEFAULT_CAPS)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def number(name: str) -> int:
    return int(getattr(prctl, "CAP_" + name.upper()))


def confine(caps: tuple[str, ...]) -> None:
    """Keep exactly `caps`, for this process and for the programs it execs.

    Called with a full set, just after entering (or creating) a user namespace.
    The bounding set limits what an exec'd uid 0 gets; the ambient set is what
    an exec'd non-root uid gets.
    """
    keep = {number(c) for c in caps}
    for cap in range(LAST_CAP + 1):
        if cap not in keep:
            _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    prctl.set_caps((sorted(keep), prctl.CAP_INHERITABLE, True))
    prctl.cap_inheritable.limit(*keep)
    for cap in keep:
        _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap, 0, 0)
    prctl.cap_effective.limit(*keep)
    prctl.cap_permitted.limit(*keep)


def lower(caps: tuple[str, ...]) -> None:
    """Keep only `caps` (a subset of what we hold) in this process and what it execs."""
    keep = {number(c) for c in caps}
    for cap in range(LAST_CAP + 1):
        if cap not in keep:
            _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_LOWER, cap, 0, 0)
            _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # only while we hold SETPCAP
    prctl.cap_inheritable.limit(*keep)
    prctl.cap_effective.limit(*keep)
    prctl.cap_permitted.limit(*keep)
