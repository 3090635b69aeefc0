"""Making namespaces, in the helper: the zygote that clones them, and a pool.

The zygote (_zygote.c) is a small process of the helper's that clones each
namespace: cloning the helper itself, a ~20 MB Python process, cost three
times the kernel's own work. Its child writes the identity uid/gid map, makes
the taps, brings lo up, sends the taps and namespace fds back over SCM_RIGHTS,
and stays as the namespace's init (PID 1), a child of the helper, until its
keeper pipe closes. The pool makes the next namespace of a kind ahead of
time, while a test runs.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import kernel, protocol, resolver
from .errors import HelperError, TunError, UserNamespaceError, VdensError

Spec = dict[str, Any]  # ifnames, mnt, resolver, resolvconf

# A bare interpreter (no site, no package import) that loads the extension and
# enters its C loop: what it clones is a few MB, not the helper's 20.
_ZYGOTE = """import sys
from importlib.machinery import ExtensionFileLoader, ModuleSpec
loader = ExtensionFileLoader("pytest_vdens._zygote", sys.argv[1])
mod = loader.create_module(ModuleSpec(loader.name, loader, origin=sys.argv[1]))
mod.serve(int(sys.argv[2]))
"""


class Zygote:
    """The helper's zygote process, and the requests that make it clone."""

    ANSWER_TIMEOUT = 30.0  # a clone takes milliseconds, even on a loaded machine

    def __init__(self) -> None:
        path = kernel.extension("_zygote")
        if path is None:
            raise kernel.unbuilt("_zygote")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _ZYGOTE, path, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self.sock = mine
        self.sock.settimeout(self.ANSWER_TIMEOUT)
        self.waiting: list[list[int]] = []  # tickets whose answer is unread

    def clone(self, spec: Spec, reply: int, keeper: int) -> list[int]:
        """Ask for a new namespace, whose init answers on `reply`; not waiting for it.

        The returned ticket holds the init's pid once pid() has read the answer:
        the helper serves its clients meanwhile.
        """
        flags = kernel.CLONE_NEWUSER | kernel.CLONE_NEWNET | kernel.CLONE_NEWPID
        if spec["mnt"]:
            flags |= kernel.CLONE_NEWNS
        text = resolver.render(spec["resolver"]) if spec["resolver"] else ""
        fields = [str(flags), str(os.geteuid()), str(os.getegid()), spec["resolvconf"] or "", text,
                  *spec["ifnames"]]
        try:
            socket.send_fds(self.sock, ["".join(f + "\0" for f in fields).encode()], [reply, keeper])
        except OSError as e:
            raise HelperError(f"the namespace zygote is gone ({e})") from None
        ticket: list[int] = []
        self.waiting.append(ticket)
        return ticket

    def pid(self, ticket: list[int]) -> int:
        """The pid of a ticket's init, or the reason the clone failed."""
        while not ticket:  # answers come in the order of the requests
            try:
                answer = int(self.sock.recv(64) or b"0")
            except TimeoutError:
                self.proc.kill()  # lost in step with us: the next clone starts another
                raise HelperError("the namespace zygote did not answer in "
                                  f"{self.ANSWER_TIMEOUT} s") from None
            except OSError:
                answer = 0
            if answer == 0:
                raise HelperError(f"the namespace zygote is gone (exit status {self.proc.poll()})")
            self.waiting.pop(0).append(answer)
        if ticket[0] < 0:
            err = -ticket[0]
            if err in (errno.EPERM, errno.ENOSPC, errno.EACCES, errno.EUSERS):
                raise UserNamespaceError(kernel.userns_hint(err))
            raise HelperError(f"cannot clone a namespace: {os.strerror(err)}")
        return ticket[0]

    def close(self) -> None:
        self.sock.close()
        self.proc.wait()


def child_error(reply: dict[str, Any]) -> VdensError:
    """What a namespace's init could not do, as the error a user reads."""
    step, err, arg = reply["step"], reply["errno"], reply["arg"]
    why = os.strerror(err)
    if step == "tun_open":
        fix = ("run `sudo chmod 0666 /dev/net/tun` (most distributions ship it 0666)"
               if err in (errno.EACCES, errno.EPERM) else "load the tun module: `sudo modprobe tun`")
        return TunError(f"cannot open {kernel.TUN_PATH}: {why}; {fix}")
    if step == "tun_create":
        return TunError(f"cannot create tap {arg!r}: {why}")
    return HelperError(f"making the namespace failed: {step} {arg}: {why}")


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
    """A namespace being made: its init is setting it up."""

    key: str
    zygote: Zygote
    ticket: list[int]
    sock: socket.socket
    keeper: int
    ntaps: int

    @classmethod
    def start(cls, zygote: Zygote, spec: Spec) -> Maker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep_r, keep_w = os.pipe2(os.O_CLOEXEC)
        try:
            ticket = zygote.clone(spec, theirs.fileno(), keep_r)
        except BaseException:
            mine.close()
            os.close(keep_w)
            raise
        finally:
            theirs.close()
            os.close(keep_r)
        return cls(key_of(spec), zygote, ticket, mine, keep_w, len(spec["ifnames"]))

    def finish(self) -> Made:
        """Wait for the namespace (or the reason it could not be made)."""
        try:
            pid = self.zygote.pid(self.ticket)
            reply, fds = protocol.recv(self.sock)
        except EOFError:
            reply, fds = {"ok": False, "step": "init", "errno": errno.ECHILD, "arg": "died"}, []
        except BaseException:
            os.close(self.keeper)
            raise
        finally:
            self.sock.close()
        if not reply["ok"]:
            os.close(self.keeper)
            os.waitpid(pid, 0)
            raise child_error(reply)
        n = self.ntaps
        return Made(pid, os.pidfd_open(pid), self.keeper, fds[:n], fds[n],
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
        self.zygote = Zygote()
        self.ready: dict[str, list[Made]] = {}
        self.making: dict[str, list[Maker]] = {}
        self.depth: dict[str, int] = {}
        self.kinds: list[str] = []  # most recently asked last

    def live_zygote(self) -> Zygote:
        """The zygote, started again if it died (someone killed it): the helper goes on."""
        if self.zygote.proc.poll() is not None:
            self.zygote.close()
            self.zygote = Zygote()
        return self.zygote

    def take(self, spec: Spec) -> Made:
        """A namespace of this kind: made ahead if one is ready, else now."""
        key = key_of(spec)
        self.touch(key)
        if self.ready.get(key):
            return self.ready[key].pop(0)
        if not self.making.get(key):
            self.depth[key] = min(2 * self.depth.get(key, 1), self.MAX_DEPTH)
            self.making[key] = [Maker.start(self.live_zygote(), spec)]
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
            maker = Maker.start(self.live_zygote(), spec)
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
        """Discard what was made ahead (the zygote stays: see shutdown())."""
        for key in list(self.kinds):
            self.forget(key)

    def shutdown(self) -> None:
        self.close()
        self.zygote.close()
