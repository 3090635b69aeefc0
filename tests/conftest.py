"""Shared fixtures for the engine tests: real VDE peers, and network set-up helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pytest_vdens import Namespace

# A project of its own, with hard-coded ports: tests/test_isolate.py runs it.
collect_ignore = ["portclash"]

ECHO_SERVER = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    with c:
        while data := c.recv(65536):
            c.sendall(data)
"""


def configure(ns: Namespace, cidr: str, dev: str = "vde0") -> None:
    """Give `dev` an address and bring it up, with ip(8) run inside."""
    nodad = ["nodad"] if ":" in cidr else []  # usable at once, no duplicate detection wait
    ns.run(["ip", "addr", "add", cidr, "dev", dev, *nodad], check=True)
    ns.run(["ip", "link", "set", dev, "up"], check=True)


def start_echo_server(ns: Namespace, host: str, port: int) -> subprocess.Popen[str]:
    proc = ns.popen([sys.executable, "-c", ECHO_SERVER, host, str(port)],
                    stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def echo(host: str, port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Connect, send payload, return what comes back (runs wherever it is called)."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def wait_until(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(cond())  # type: ignore[operator]


def alive(pid: int) -> bool:
    """Running (not a zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def accepts_connections(url: str) -> bool:
    """Whether a switch listens at url: its ctl file appears at bind(), before listen()."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(url.removeprefix("vde://") + "/ctl")
        except OSError:
            return False
    return True


def processes_in(link: str) -> list[int]:
    """Live processes whose network namespace is `link` (e.g. 'net:[4026532]')."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == link and alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def holders_of(link: str) -> list[str]:
    """Every process or fd that still keeps namespace `link` alive."""
    found = [f"pid {p}" for p in processes_in(link)]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                for fd in os.listdir(f"/proc/{entry}/fd"):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == link:
                        found.append(f"fd {fd} of pid {entry}")
            except OSError:
                pass
    return found


@pytest.fixture
def vde_switch(tmp_path: Path) -> Iterator[str]:
    """A real vde2 vde_switch; yields its vde:// URL."""
    exe = shutil.which("vde_switch")
    if exe is None:
        pytest.fail("vde_switch is not installed: apt install vde2")
    sock = tmp_path / "vde_switch"
    proc = subprocess.Popen([exe, "-s", str(sock)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: accepts_connections(f"vde://{sock}")), "vde_switch did not start"
    yield f"vde://{sock}"
    proc.kill()
    proc.wait()


@pytest.fixture
def unprivileged() -> bool:
    return os.geteuid() != 0


# -- leak checks for tests that run pytest or pyvdens in subprocesses -------------------------

LEAK_TOKEN = "PYTEST_VDENS_LEAK_TOKEN"


def processes_with(token: str) -> list[int]:
    """Live processes whose environment carries LEAK_TOKEN=token (see `no_leaks`)."""
    needle = f"{LEAK_TOKEN}={token}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0") and alive(int(pid)):
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def no_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Subprocesses started from here on carry a token and get a TMPDIR of their own.

    At the end none of them (helpers, namespaces, daemons) may run after 2 s,
    and that TMPDIR must be empty. Yields the TMPDIR.
    """
    import tempfile
    import uuid

    token = uuid.uuid4().hex
    tmp = tempfile.mkdtemp(prefix="pytest-leaks-")  # short: switch sockets live under it
    monkeypatch.setenv(LEAK_TOKEN, token)
    monkeypatch.setenv("TMPDIR", tmp)
    try:
        yield tmp
        wait_until(lambda: not processes_with(token) and not os.listdir(tmp), 2)
        assert processes_with(token) == []
        assert os.listdir(tmp) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


T = TypeVar("T")


def settled(measure: Callable[[], T], quiet: float = 0.3, timeout: float = 10.0) -> T:
    """measure() once it has not changed for `quiet` seconds (the helper makes namespaces
    ahead of time, in the background)."""
    deadline = time.monotonic() + timeout
    value, since = measure(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = measure()
        if now != value:
            value, since = now, time.monotonic()
    return value
