"""What a failure report says about a test's namespaces: their network state and last frames."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Sequence

from . import decode, netstate
from .errors import VdensError
from .namespace import Namespace

FRAMES = 20  # frames in the capture summary
_SIOCGIFHWADDR = 0x8927


def _macs() -> dict[str, str]:
    """Each interface's MAC, as seen inside (runs there)."""
    macs: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s, _SIOCGIFHWADDR, name.encode()[:15].ljust(256, b"\0"))
            except OSError:
                continue
            macs[name] = raw[18:24].hex(":")
    return macs


def _inspect() -> tuple[str, dict[str, str]]:
    return netstate.gather(), _macs()


def state_here(label: str, ns: Namespace) -> tuple[str, str]:
    """The state section of `ns` gathered by a process inside it (a marked test's)."""
    return "vdens network state", f"{_heading(label, ns)}\n{netstate.gather().rstrip()}"


def _heading(label: str, ns: Namespace) -> str:
    nets = ", ".join(f"{i} on {u}" for i, u in zip(ns.interfaces, ns.nets, strict=True))
    return f"{label} ({nets or 'no interfaces'}):"


def sections(spaces: Sequence[tuple[str, Namespace]], kept: dict[str, str] | None = None,
             with_state: bool = True) -> list[tuple[str, str]]:
    """Report sections for namespaces still open, each with a label such as "ns0".

    `kept` is the directory each label's captures will be kept in. Without
    `with_state` (a marked test's child gave it), only the capture section.
    """
    state: list[str] = []
    captures: dict[str, list[str]] = {}
    macs: dict[str, str] = {}
    if with_state and any(not ns.closed for _, ns in spaces):
        netstate.preload()  # once here, not in each forked child
    for label, ns in spaces:
        if ns.closed:
            continue
        try:
            text, own = ns.call(_inspect) if with_state else ("", ns.call(_macs))
        except VdensError as e:
            text, own = f"  (could not look inside: {e})", {}
        state.append(f"{_heading(label, ns)}\n{text.rstrip()}")
        for ifname, path in ns.captures.items():
            # a capture that wrapped around: its older half first
            captures[f"{label}/{ifname}"] = [p for p in (path + ".old", path) if os.path.exists(p)]
            if ifname in own:
                macs[f"{label}/{ifname}"] = own[ifname]
    if not with_state:
        state = []
    out = [("vdens network state", "\n".join(state))] if state else []
    if captures:
        lines = []
        if kept:
            lines += ["captures (pcap, e.g. `tcpdump -nr FILE` or Wireshark):"]
            lines += [f"  {kept[label]}/{ifname}.pcap" for label, ifname in
                      (key.split("/", 1) for key in captures) if label in kept]
        try:
            summary = decode.summarize(captures, last=FRAMES, own_macs=macs)
        except (OSError, ValueError) as e:
            summary = [f"(could not read the captures: {e})"]
        lines += [f"last {len(summary)} frames:" if summary else "no frames"]
        lines += [f"  {line}" for line in summary]
        out.append(("vdens capture", "\n".join(lines)))
    return out
