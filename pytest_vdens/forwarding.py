"""Moving frames in the helper: taps <-> libvdeplug connections, and embedded switches.

An embedded switch is libvdeplug's own switch:// opened in the helper: other VDE
programs join it at vde://DIR. The helper's taps on it are its local ports: a
frame between two local namespaces goes from one tap to the other directly; only
frames for outside peers cross into the libvdeplug switch.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from .capture import Capture
from .impairment import WireFilter
from .libvdeplug import ETHBUFSIZE, VdeConn, lib, scheme

_BATCH = 64
_ETH_MIN = 14
_FLOOD = object()


@dataclass(eq=False)
class Link:
    """One interface: a tap in a namespace, and where its frames go."""

    ifname: str
    url: str
    tap: int
    conn: VdeConn | None = None  # a plain VDE client
    switch: LocalSwitch | None = None  # a port of an embedded switch
    datafd: int = -1
    ctlfd: int = -1
    error: str | None = None
    filter: WireFilter | None = None  # a wirefilter between the tap and the network
    network: LocalSwitch | None = None  # the embedded switch it joins, filter or not
    capture: Capture | None = None


@dataclass(eq=False)
class LocalSwitch:
    """An embedded switch: switch:// in this process, plus local tap ports."""

    path: str
    conn: VdeConn = field(init=False)
    ports: list[Link] = field(default_factory=list)
    # learned MACs: a local port, or None for the libvdeplug side (outside peers)
    macs: dict[bytes, Link | None] = field(default_factory=dict)
    impair: dict[str, object] = field(default_factory=dict)  # for each host's link

    def __post_init__(self) -> None:
        self.conn = VdeConn(f"switch://{self.path}")

    @property
    def url(self) -> str:
        return f"vde://{self.path}"

    def detach(self, link: Link) -> None:
        self.ports.remove(link)
        for mac in [m for m, port in self.macs.items() if port is link]:
            del self.macs[mac]

    def close(self) -> None:
        self.conn.close()  # removes DIR and its sockets


class Forwarder:
    """The frame-moving loops; one shared buffer, no copies beyond the syscalls'."""

    def __init__(self) -> None:
        self.buf = bytearray(ETHBUFSIZE)
        self.view = memoryview(self.buf)
        self.cbuf = (ctypes.c_char * ETHBUFSIZE).from_buffer(self.buf)
        self.vde_send = lib().vde_send
        self.vde_recv = lib().vde_recv

    def tap_to_vde(self, link: Link) -> None:
        assert link.conn is not None
        tap, handle, cbuf, bufs, send = link.tap, link.conn.handle, self.cbuf, [self.buf], self.vde_send
        readv, cap, view = os.readv, link.capture, self.view
        for _ in range(_BATCH):
            try:
                n = readv(tap, bufs)
            except BlockingIOError:
                return
            if cap is not None:
                cap.write(view[:n])
            send(handle, cbuf, n, 0)

    def vde_to_tap(self, link: Link) -> None:
        assert link.conn is not None
        tap, handle, cbuf, view, recv = link.tap, link.conn.handle, self.cbuf, self.view, self.vde_recv
        write, cap = os.write, link.capture
        # Only vde://'s recv returns at once when idle; others (vxvde, switch,
        # slirp...) block: one frame per wake-up for them.
        for _ in range(_BATCH if scheme(link.url) == "vde" else 1):
            n = recv(handle, cbuf, ETHBUFSIZE, 0)
            if n <= 0:
                return
            if n < _ETH_MIN:  # libvdeplug's "nothing for you" (1)
                continue
            if cap is not None:
                cap.write(view[:n])
            try:
                write(tap, view[:n])
            except OSError:  # tap queue full or down: drop, as a switch would
                pass

    def tap_to_switch(self, link: Link) -> None:
        """Frames a local port sends: to another local port, or into the switch."""
        sw = link.switch
        assert sw is not None
        tap, buf, bufs, view, macs, ports = link.tap, self.buf, [self.buf], self.view, sw.macs, sw.ports
        readv, write, send, handle, cbuf = os.readv, os.write, self.vde_send, sw.conn.handle, self.cbuf
        cap = link.capture
        for _ in range(_BATCH):
            try:
                n = readv(tap, bufs)
            except BlockingIOError:
                return
            if n < _ETH_MIN:
                continue
            src = bytes(view[6:12])
            if macs.get(src) is not link:
                macs[src] = link
            frame = view[:n]
            if cap is not None:
                cap.write(frame)
            dest = _FLOOD if buf[0] & 1 else macs.get(bytes(view[:6]), _FLOOD)
            if dest is None:  # a peer on the outside
                send(handle, cbuf, n, 0)
            elif isinstance(dest, Link):
                if dest is not link:
                    if dest.capture is not None:
                        dest.capture.write(frame)
                    try:
                        write(dest.tap, frame)
                    except OSError:  # queue full: drop, as a switch would
                        pass
            else:  # broadcast, multicast or unknown: everyone else
                for port in ports:
                    if port is not link:
                        if port.capture is not None:
                            port.capture.write(frame)
                        try:
                            write(port.tap, frame)
                        except OSError:
                            pass
                send(handle, cbuf, n, 0)

    def switch_to_taps(self, sw: LocalSwitch) -> None:
        """One event of the libvdeplug switch; a frame for us goes to the local ports.

        Only one vde_recv per readiness: the switch plugin's recv blocks when idle.
        """
        n = self.vde_recv(sw.conn.handle, self.cbuf, ETHBUFSIZE, 0)
        if n < _ETH_MIN:
            return
        view, buf, write = self.view, self.buf, os.write
        sw.macs[bytes(view[6:12])] = None
        frame = view[:n]
        dest = None if buf[0] & 1 else sw.macs.get(bytes(view[:6]))
        for port in (dest,) if dest is not None else sw.ports:
            if port.capture is not None:
                port.capture.write(frame)
            try:
                write(port.tap, frame)
            except OSError:
                pass
