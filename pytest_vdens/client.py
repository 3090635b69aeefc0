"""Starting this process's helper and talking to it."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from typing import Any

from . import protocol
from .errors import ArgumentError, HelperError, by_name

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HelperClient:
    """A connection to one helper process; requests are serialised by a lock."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PKG_PARENT, env.get("PYTHONPATH")]))
        debug = bool(os.environ.get("PYTEST_VDENS_DEBUG"))
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest_vdens.helper", str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                stdout=None if debug else subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL)
        self.sock = mine
        self.lock = threading.Lock()
        self.posted: list[str] = []  # ops of requests sent without waiting, replies unread
        self.failed: list[str] = []
        self.alarm = -1  # readable once a network of any namespace has gone away
        self.owner = os.getpid()
        hello, fds = self._exchange(None)
        if not hello["ok"]:  # it could not start: e.g. no libvdeplug
            self.close()
            raise by_name(hello["error"])(hello["message"])
        self.pid: int = hello["pid"]
        self.tmpdir: str = hello["tmpdir"]
        self.alarm = fds[0]

    def networks_failed(self) -> bool:
        """Whether any namespace's network has gone away: until then, no need to ask."""
        poller = select.poll()  # not select(): a process with many namespaces holds over 1024 fds
        poller.register(self.alarm, select.POLLIN)
        return bool(poller.poll(0))

    def _exchange(self, msg: dict[str, Any] | None,
                  reply: bool = True) -> tuple[dict[str, Any], list[int]]:
        try:
            # the helper's send blocks past net.unix.max_dgram_qlen (10) unread replies
            if len(self.posted) >= 8:
                self._read_posted()
            if msg is not None:
                protocol.send(self.sock, msg)
            if not reply:
                self.posted.append(msg["op"] if msg else "")
                return {"ok": True}, []
            self._read_posted()  # replies come in order: those of posted requests first
            return protocol.recv(self.sock)
        except protocol.TooLong:
            raise
        except (EOFError, OSError) as e:
            self.sock.close()
            status = self.proc.poll()
            raise HelperError(
                f"the pytest-vdens helper (pid {self.proc.pid}) is gone "
                f"({'exit status ' + str(status) if status is not None else e}); "
                "run with PYTEST_VDENS_DEBUG=1 to see its stderr") from None

    def _read_posted(self) -> None:
        while self.posted:
            op = self.posted.pop(0)
            earlier, fds = protocol.recv(self.sock)
            for fd in fds:
                os.close(fd)
            if not earlier["ok"]:
                self.failed.append(f"{op}: {earlier['message']}")

    def request(self, op: str, **args: Any) -> tuple[dict[str, Any], list[int]]:
        """Send one request; return the reply and the fds that came with it."""
        return self._request(op, args, True)

    def post(self, op: str, **args: Any) -> None:
        """Send a request whose reply nobody waits for (it is read before the next one's)."""
        self._request(op, args, False)

    def _request(self, op: str, args: dict[str, Any], wait: bool) -> tuple[dict[str, Any], list[int]]:
        with self.lock:
            try:
                reply, fds = self._exchange({"op": op, **args}, wait)
            except protocol.TooLong as e:
                raise ArgumentError(f"{op}: the arguments are too large to send ({e}); "
                                    "is a URL or path that long on purpose?") from None
            if self.failed:  # a posted request failed: say so now, in place of this reply
                for fd in fds:
                    os.close(fd)
                failed, self.failed = self.failed, []
                raise HelperError("an earlier request failed in the helper: " + "; ".join(failed))
        if not reply["ok"]:
            for fd in fds:
                os.close(fd)
            raise by_name(reply["error"])(reply["message"])
        return reply, fds

    @property
    def alive(self) -> bool:
        return self.sock.fileno() >= 0 and self.proc.poll() is None

    def close(self) -> None:
        """Stop the helper: it closes every namespace and removes its files."""
        self.sock.close()
        if self.alarm >= 0:
            os.close(self.alarm)
            self.alarm = -1
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_helper: HelperClient | None = None
_lock = threading.Lock()


def helper() -> HelperClient:
    """This process's helper, started on first use (again after a fork, or if it died)."""
    global _helper
    with _lock:
        if _helper is None or not _helper.alive or _helper.owner != os.getpid():
            _helper = HelperClient()
        return _helper


def shutdown() -> None:
    """Stop this process's helper, if it runs."""
    global _helper
    with _lock:
        if _helper is not None and _helper.owner == os.getpid():
            _helper.close()
        _helper = None


def _forget_after_fork() -> None:
    # A forked child must not share the parent's request stream, nor keep
    # the parent's helper alive past the parent.
    global _helper, _lock
    _lock = threading.Lock()
    if _helper is not None:
        try:
            os.close(_helper.sock.detach())
        except OSError:
            pass
        _helper = None


os.register_at_fork(after_in_child=_forget_after_fork)
