"""The helper process: makes namespaces, forwards their frames to VDE, cleans up.

One helper runs per Python process that uses the engine (so each xdist worker
has its own). It is started by exec, never forked from a threaded parent, and
dies with its parent. It is single-threaded: one epoll loop serves the control
socket and every tap <-> VDE pair.

A namespace is made by a forked child that unshares user+net+pid (+mnt), makes
the taps and forks the namespace's init. That init holds the PID namespace: when
the helper closes its keeper pipe, or dies, init exits and the kernel kills
every process left in the namespace.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import prctl
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from . import kernel, protocol, resolver
from .errors import HelperError, VdensError, by_name
from .libvdeplug import ETHBUFSIZE, VdeConn, lib
from .switch import SwitchProcess

_BATCH = 64
_ETH_MIN = 14


def _lo_up_message() -> bytes:
    """RTM_NEWLINK 'lo up', encoded once by pyroute2; a new netns's lo is index 1."""
    msg = ifinfmsg()
    msg["index"] = 1
    msg["flags"] = msg["change"] = 1  # IFF_UP
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = 1
    msg.encode()
    return bytes(msg.data)


_LO_UP = _lo_up_message()


def _bring_lo_up() -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.send(_LO_UP)
        ack = nl.recv(4096)
    err = int.from_bytes(ack[16:20], sys.byteorder, signed=True)
    if err:
        raise OSError(-err, f"bringing lo up: {os.strerror(-err)}")


@dataclass
class Link:
    """One interface: a tap in the namespace and its VDE connection in the helper."""

    ifname: str
    url: str
    conn: VdeConn
    tap: int
    datafd: int = -1
    ctlfd: int = -1
    error: str | None = None


@dataclass
class Netns:
    id: int
    init_pid: int
    init_pidfd: int
    keeper: int
    links: list[Link] = field(default_factory=list)


class Forwarder:
    """Moves frames between taps and libvdeplug connections; one shared buffer, no copies."""

    def __init__(self) -> None:
        self.buf = bytearray(ETHBUFSIZE)
        self.view = memoryview(self.buf)
        self.cbuf = (ctypes.c_char * ETHBUFSIZE).from_buffer(self.buf)
        self.vde_send = lib().vde_send
        self.vde_recv = lib().vde_recv

    def tap_to_vde(self, link: Link) -> None:
        tap, handle, cbuf, bufs, send = link.tap, link.conn.handle, self.cbuf, [self.buf], self.vde_send
        readv = os.readv
        for _ in range(_BATCH):
            try:
                n = readv(tap, bufs)
            except BlockingIOError:
                return
            send(handle, cbuf, n, 0)

    def vde_to_tap(self, link: Link) -> None:
        tap, handle, cbuf, view, recv = link.tap, link.conn.handle, self.cbuf, self.view, self.vde_recv
        write = os.write
        for _ in range(_BATCH):
            n = recv(handle, cbuf, ETHBUFSIZE, 0)
            if n <= 0:
                return
            if n < _ETH_MIN:  # libvdeplug's "nothing for you" (1)
                continue
            try:
                write(tap, view[:n])
            except OSError:  # tap queue full or down: drop, as a switch would
                pass


def _namespace_child(sock: socket.socket, keeper: int, req: dict[str, Any]) -> None:
    """In the forked child: make the namespace, send back taps and ns fds. Never returns."""
    try:
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, keeper)
        os.closerange(keeper + 1, 65536)
        prctl.set_pdeathsig(signal.SIGKILL)
        uid, gid = os.geteuid(), os.getegid()
        flags = kernel.CLONE_NEWUSER | kernel.CLONE_NEWNET | kernel.CLONE_NEWPID
        if req["mnt"]:
            flags |= kernel.CLONE_NEWNS
        kernel.unshare(flags)
        kernel.write_identity_maps(uid, gid)
        if req["mnt"]:
            resolver.install(req["resolver"], req["resolvconf"])
        taps = [kernel.open_tap(name) for name in req["ifnames"]]
        _bring_lo_up()
        init = os.fork()
        if init == 0:
            _namespace_init(keeper)
        names = ["user", "net", "pid_for_children"] + (["mnt"] if req["mnt"] else [])
        nsfds = [os.open(f"/proc/self/ns/{n}", os.O_RDONLY | os.O_CLOEXEC) for n in names]
        protocol.send(sock, {"ok": True, "init": init, "nsnames": names}, taps + nsfds)
    except BaseException as e:
        err = e if isinstance(e, VdensError) else HelperError(f"making the namespace failed: {e!r}")
        try:
            protocol.send(sock, {"ok": False, "error": type(err).__name__, "message": str(err)})
        except OSError:
            pass
    os._exit(0)


def _namespace_init(keeper: int) -> None:
    """PID 1 of the namespace: reap orphans until the keeper pipe closes, then exit."""
    os.closerange(3, keeper)
    os.closerange(keeper + 1, 65536)
    prctl.set_name("vdens-init")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    poller = select.poll()
    poller.register(keeper, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == keeper:
                os._exit(0)
            os.read(wake_r, 512)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


class Helper:
    """The helper's state and request handlers."""

    def __init__(self, ctl: socket.socket, parent: int) -> None:
        self.ctl = ctl
        self.parent = parent
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        self.tmpdir = tempfile.mkdtemp(prefix=f"pytest-vdens-{worker}{'-' if worker else ''}")
        self.switches: dict[int, SwitchProcess] = {}
        self.dying: list[SwitchProcess] = []
        self.default_id = 0
        self.namespaces: dict[int, Netns] = {}
        self.next_id = 1
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.fwd = Forwarder()
        self.watch(ctl.fileno(), self.on_request)

    def watch(self, fd: int, handler: Callable[[int], None]) -> None:
        self.ep.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def serve(self) -> None:
        protocol.send(self.ctl, {"ok": True, "pid": os.getpid(), "tmpdir": self.tmpdir})
        self.running = True
        while self.running:
            for fd, events in self.ep.poll(1.0):
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(events)
            if os.getppid() != self.parent:
                break
            self.dying = [sw for sw in self.dying if not sw.reap()]

    def on_request(self, events: int) -> None:
        try:
            req, fds = protocol.recv(self.ctl)
        except (EOFError, OSError):
            self.running = False
            return
        for fd in fds:
            os.close(fd)
        reply: dict[str, Any]
        out: list[int] = []
        try:
            reply, out = getattr(self, "op_" + req["op"])(req)
        except VdensError as e:
            reply = {"ok": False, "error": type(e).__name__, "message": str(e)}
        except Exception as e:
            reply = {"ok": False, "error": "HelperError",
                     "message": f"helper failed on {req.get('op')!r}: {e!r}\n{traceback.format_exc()}"}
        try:
            protocol.send(self.ctl, reply, out)
        except OSError:
            self.running = False
        finally:
            for fd in out:
                os.close(fd)

    # -- requests -------------------------------------------------------------

    def op_default_switch(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {"ok": True, "url": self.default_switch()}, []

    def op_open(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        prefix = req["iface"]
        kernel.check_ifname_prefix(prefix, len(req["nets"]))
        urls = [self.default_switch() if u is None else u for u in req["nets"]]
        ifnames = [f"{prefix}{i}" for i in range(len(urls))]
        conns: list[VdeConn] = []
        try:
            for url in urls:
                conns.append(VdeConn(url))
            ns, taps, nsfds, names = self.spawn(ifnames, req)
        except BaseException:
            for c in conns:
                c.close()
            raise
        ns.links = [self.link(Link(n, u, c, t)) for n, u, c, t in zip(ifnames, urls, conns, taps, strict=True)]
        self.namespaces[ns.id] = ns
        return ({"ok": True, "id": ns.id, "interfaces": ifnames, "nets": urls,
                 "init": ns.init_pid, "nsnames": names}, nsfds)

    def op_close(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        ns = self.namespaces.pop(req["id"], None)
        if ns is not None:
            self.destroy(ns)
        return {"ok": True}, []

    def op_status(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        ns = self.namespaces.get(req["id"])
        if ns is None:
            return {"ok": True, "open": False, "errors": []}, []
        return {"ok": True, "open": True,
                "errors": [link.error for link in ns.links if link.error]}, []

    # -- namespaces -----------------------------------------------------------

    def spawn(self, ifnames: list[str],
              req: dict[str, Any]) -> tuple[Netns, list[int], list[int], list[str]]:
        """Fork the namespace maker; its taps, namespace fds and init come back."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep_r, keep_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            mine.close()
            os.close(keep_w)
            _namespace_child(theirs, keep_r, dict(req, ifnames=ifnames))
        theirs.close()
        os.close(keep_r)
        try:
            reply, fds = protocol.recv(mine)
        except EOFError:
            reply, fds = {"ok": False, "error": "HelperError",
                          "message": "the namespace maker died"}, []
        finally:
            mine.close()
            os.waitpid(pid, 0)
        if not reply["ok"]:
            os.close(keep_w)
            raise by_name(reply["error"])(reply["message"])
        ns = Netns(self.next_id, reply["init"], os.pidfd_open(reply["init"]), keep_w)
        self.next_id += 1
        return ns, fds[:len(ifnames)], fds[len(ifnames):], reply["nsnames"]

    def link(self, link: Link) -> Link:
        link.datafd = link.conn.datafd
        link.ctlfd = link.conn.ctlfd
        os.set_blocking(link.datafd, False)
        self.watch(link.tap, lambda ev: self.fwd.tap_to_vde(link))
        self.watch(link.datafd, lambda ev: self.on_data(link, ev))
        if link.ctlfd >= 0:
            os.set_blocking(link.ctlfd, False)
            self.watch(link.ctlfd, lambda ev: self.on_ctl(link))
        return link

    def on_data(self, link: Link, events: int) -> None:
        if events & (select.EPOLLERR | select.EPOLLHUP):
            self.disconnect(link, "its data connection failed")
        else:
            self.fwd.vde_to_tap(link)

    def on_ctl(self, link: Link) -> None:
        try:
            if os.read(link.ctlfd, 4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.disconnect(link, "the switch closed its control connection")

    def disconnect(self, link: Link, why: str) -> None:
        link.error = f"VDE network {link.url!r} of {link.ifname} went away: {why}"
        for fd in (link.tap, link.datafd, link.ctlfd):
            self.unwatch(fd)
        try:
            kernel.set_carrier(link.tap, False)
        except OSError:
            pass

    def destroy(self, ns: Netns) -> None:
        for link in ns.links:
            for fd in (link.tap, link.datafd, link.ctlfd):
                self.unwatch(fd)
            link.conn.close()
            os.close(link.tap)  # persistent: the kernel deletes it with the netns
        os.close(ns.keeper)  # init exits; the kernel kills the rest of the namespace
        if select.select([ns.init_pidfd], [], [], 5.0)[0]:
            os.waitpid(ns.init_pid, 0)
        os.close(ns.init_pidfd)

    # -- embedded switches ----------------------------------------------------

    def op_switch_open(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        sw = self.new_switch()
        return {"ok": True, "id": self.next_id - 1, "url": sw.url}, []

    def op_switch_close(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        sw = self.switches.pop(req["id"], None)
        if sw is not None:
            sw.stop()
            self.dying.append(sw)
        return {"ok": True}, []

    def new_switch(self) -> SwitchProcess:
        sw = SwitchProcess(os.path.join(self.tmpdir, f"sw{self.next_id}"))
        self.switches[self.next_id] = sw
        self.next_id += 1
        return sw

    def default_switch(self) -> str:
        """vde:// URL of this helper's default switch, started on first use."""
        sw = self.switches.get(self.default_id)
        if sw is None or not sw.running:
            sw = self.new_switch()
            self.default_id = self.next_id - 1
        return sw.url

    def shutdown(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up, whatever comes
        for ns in list(self.namespaces.values()):
            self.destroy(ns)
        self.namespaces.clear()
        for sw in self.switches.values():
            sw.stop()
        for sw in [*self.switches.values(), *self.dying]:
            sw.reap(5)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    fd, parent = int(args[0]), int(args[1])
    prctl.set_name("vdens-helper")
    # SIGTERM, not SIGKILL: PDEATHSIG also fires when only the parent *thread*
    # that started us exits, so we check that the parent process is really gone.
    prctl.set_pdeathsig(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        if os.getppid() != parent:
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prctl.set_child_subreaper(True)
    ctl = socket.socket(fileno=fd)
    if os.getppid() != parent:
        return
    helper = Helper(ctl, parent)
    try:
        helper.serve()
    finally:
        helper.shutdown()


if __name__ == "__main__":
    main()
