"""Embedded VDE switches: `vde_plug switch://DIR null://` processes, and their handles."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import prctl

from . import client
from .errors import NetworkError, Unavailable


def _listening(path: str) -> bool:
    # The socket file appears at bind(), before listen(): only a connect tells.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class SwitchProcess:
    """A real libvdeplug switch, run as a child of the helper; DIR goes with it."""

    def __init__(self, path: str) -> None:
        exe = shutil.which("vde_plug")
        if exe is None:
            raise Unavailable("the embedded switch needs vde_plug, which is not installed; "
                               "install it with `apt install vdeplug`, or give nets= explicitly")
        self.path = path
        self.url = f"vde://{path}"
        self.proc = subprocess.Popen(
            [exe, f"switch://{path}", "null://"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=lambda: prctl.set_pdeathsig(signal.SIGTERM))  # it removes DIR on SIGTERM
        ctl = os.path.join(path, "ctl")
        deadline = time.monotonic() + 10
        while not _listening(ctl):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = self.proc.communicate()[1].decode(errors="replace").strip()
                raise NetworkError(f"the embedded switch `vde_plug switch://{path} null://` "
                                   f"did not start: {err or 'timeout'}")
            time.sleep(0.0005)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Ask it to go (it removes its directory); reap() later."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, timeout: float = 0) -> bool:
        """Whether it has exited, waiting up to `timeout`; killed if it ignores us that long."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if not timeout:
                return False
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.path, ignore_errors=True)
        return True


class Switch:
    """An embedded switch of this process's helper, private to its user (0700).

    Other VDE programs (vdens, vde_plug, qemu) and namespaces join it at `url`.
    """

    def __init__(self) -> None:
        self._helper = client.helper()
        reply, _ = self._helper.request("switch_open")
        self.id: int = reply["id"]
        self.url: str = reply["url"]
        self.closed = False

    def __repr__(self) -> str:
        return f"<Switch {self.url}{' closed' if self.closed else ''}>"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._helper.owner == os.getpid() and self._helper.alive:
                self._helper.request("switch_close", id=self.id)

    def __enter__(self) -> Switch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
