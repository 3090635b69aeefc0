"""Making namespaces, in the helper: the maker child, the namespace's init, and a pool.

A maker is a child the helper clones straight into new user+net+pid (+mnt)
namespaces: it writes the identity uid/gid map, makes the taps, brings lo up,
sends the taps and namespace fds back over SCM_RIGHTS, and stays as the
namespace's init (PID 1). The pool
makes the next namespace of a kind ahead of time, while a test runs.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import kernel, netlink, protocol, resolver
from ._prctl import prctl
from .errors import HelperError, VdensError, by_name

Spec = dict[str, Any]  # ifnames, mnt, resolver, resolvconf


def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _namespace_child(sock: socket.socket, keeper: int, spec: Spec, uid: int, gid: int) -> None:
    """PID 1 of a just-cloned namespace: set it up, send back taps and ns fds, then
    be its init. Never returns."""
    try:
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, keeper)
        os.closerange(keeper + 1, _fd_limit())
        prctl.set_pdeathsig(signal.SIGKILL)
        kernel.write_identity_maps(uid, gid)
        if spec["mnt"]:
            resolver.install(spec["resolver"], spec["resolvconf"])
        taps = [kernel.open_tap(name) for name in spec["ifnames"]]
        # kept by the helper, to configure the namespace later without entering it
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        netlink.request(nl.fileno(), netlink.link_up(1))  # lo
        indexes = [socket.if_nametoindex(name) for name in spec["ifnames"]]
        names = ["user", "net", "pid_for_children"] + (["mnt"] if spec["mnt"] else [])
        nsfds = [nl.fileno()] + [os.open(f"/proc/self/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
                                 for n in names]
        protocol.send(sock, {"ok": True, "nsnames": names, "indexes": indexes}, taps + nsfds)
    except BaseException as e:
        err = e if isinstance(e, VdensError) else HelperError(f"making the namespace failed: {e!r}")
        try:
            protocol.send(sock, {"ok": False, "error": type(err).__name__, "message": str(err)})
        except OSError:
            pass
        os._exit(0)
    for fd in taps + nsfds[1:]:
        os.close(fd)
    nl.close()
    sock.close()
    _namespace_init(keeper)


def _namespace_init(keeper: int) -> None:
    """PID 1 of the namespace: reap orphans until the keeper pipe closes, then exit."""
    os.closerange(3, keeper)
    os.closerange(keeper + 1, _fd_limit())
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


@dataclass(eq=False)
class Made:
    """A namespace as its maker sent it: init, keeper pipe, taps, a netlink socket
    inside, namespace fds (for the caller), the taps' interface indexes."""

    init_pid: int
    init_pidfd: int
    keeper: int
    taps: list[int]
    netlink: int
    nsfds: list[int]
    nsnames: list[str]
    indexes: list[int]

    def end(self, wait: bool = True) -> None:
        """Kill init: the kernel kills what is left inside with it.

        With wait=False the caller reaps it later (reap(), when its pidfd is readable).
        """
        signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        os.close(self.netlink)
        os.close(self.keeper)
        if wait:
            poller = select.poll()  # not select(): the helper may hold over 1024 fds
            poller.register(self.init_pidfd, select.POLLIN)
            if poller.poll(5000):
                self.reap()

    def reap(self) -> None:
        os.waitpid(self.init_pid, 0)
        os.close(self.init_pidfd)

    def discard(self) -> None:
        for fd in self.taps + self.nsfds:
            os.close(fd)
        self.end()


@dataclass(eq=False)
class Maker:
    """A maker child at work (it becomes the namespace's init)."""

    key: str
    pid: int
    sock: socket.socket
    keeper: int
    ntaps: int

    @classmethod
    def start(cls, spec: Spec) -> Maker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep_r, keep_w = os.pipe2(os.O_CLOEXEC)
        flags = kernel.CLONE_NEWUSER | kernel.CLONE_NEWNET | kernel.CLONE_NEWPID
        if spec["mnt"]:
            flags |= kernel.CLONE_NEWNS
        uid, gid = os.geteuid(), os.getegid()
        try:
            pid = kernel.fork_into(flags)
        except BaseException:
            for fd in (mine, theirs):
                fd.close()
            for fd2 in (keep_r, keep_w):
                os.close(fd2)
            raise
        if pid == 0:  # pragma: no cover - the child
            mine.close()
            os.close(keep_w)
            _namespace_child(theirs, keep_r, spec, uid, gid)
        theirs.close()
        os.close(keep_r)
        return cls(key_of(spec), pid, mine, keep_w, len(spec["ifnames"]))

    def finish(self) -> Made:
        """Wait for the namespace (or the reason it could not be made)."""
        try:
            reply, fds = protocol.recv(self.sock)
        except EOFError:
            reply, fds = {"ok": False, "error": "HelperError",
                          "message": "the namespace maker died"}, []
        finally:
            self.sock.close()
        if not reply["ok"]:
            os.close(self.keeper)
            os.waitpid(self.pid, 0)
            raise by_name(reply["error"])(reply["message"])
        n = self.ntaps
        return Made(self.pid, os.pidfd_open(self.pid), self.keeper, fds[:n], fds[n],
                    fds[n + 1:], reply["nsnames"], reply["indexes"])


def key_of(spec: Spec) -> str:
    return json.dumps([spec["ifnames"], spec["mnt"], spec["resolver"], spec["resolvconf"]])


class Pool:
    """Namespaces made ahead, for recently asked kinds, while tests run.

    Each kind keeps `depth` ready or in the making. Asked for one when none is
    ready, the pool doubles that kind's depth and starts them all at once: a
    burst (a loop making a hundred) then overlaps the making of each.
    """

    KINDS = 4
    MAX_DEPTH = 16

    def __init__(self, watch: Callable[[int, Callable[[int], None]], None],
                 unwatch: Callable[[int], None]) -> None:
        self.watch, self.unwatch = watch, unwatch
        self.ready: dict[str, list[Made]] = {}
        self.making: dict[str, list[Maker]] = {}
        self.depth: dict[str, int] = {}
        self.kinds: list[str] = []  # most recently asked last

    def take(self, spec: Spec) -> Made:
        """A namespace of this kind: made ahead if one is ready, else now."""
        key = key_of(spec)
        self.touch(key)
        if self.ready.get(key):
            return self.ready[key].pop(0)
        if not self.making.get(key):
            self.depth[key] = min(2 * self.depth.get(key, 1), self.MAX_DEPTH)
            self.making[key] = [Maker.start(spec)]
            self.fill(spec)
        maker = self.making[key].pop(0)
        self.unwatch(maker.sock.fileno())
        return maker.finish()

    def touch(self, key: str) -> None:
        """Note the kind as the latest asked for; forget the oldest beyond KINDS."""
        if key in self.kinds:
            self.kinds.remove(key)
        self.kinds.append(key)
        for old in self.kinds[:-self.KINDS]:
            self.forget(old)

    def refill(self, spec: Spec) -> None:
        """Start making what a kind still asked for lacks, in the background."""
        if key_of(spec) in self.kinds:
            self.fill(spec)

    def fill(self, spec: Spec) -> None:
        key = key_of(spec)
        making = self.making.setdefault(key, [])
        while len(self.ready.get(key, ())) + len(making) < self.depth.get(key, 1):
            maker = Maker.start(spec)
            making.append(maker)
            self.watch(maker.sock.fileno(), functools.partial(self.on_made, maker))

    def on_made(self, maker: Maker, events: int = 0) -> None:
        self.unwatch(maker.sock.fileno())
        self.making[maker.key].remove(maker)
        try:
            self.ready.setdefault(maker.key, []).append(maker.finish())
        except VdensError:
            pass  # asked for again, it will fail in the open, with its reason

    def forget(self, key: str) -> None:
        self.kinds.remove(key)
        self.depth.pop(key, None)
        for made in self.ready.pop(key, []):
            made.discard()
        for maker in self.making.pop(key, []):
            self.unwatch(maker.sock.fileno())
            try:
                maker.finish().discard()
            except VdensError:
                pass

    def close(self) -> None:
        for key in list(self.kinds):
            self.forget(key)
