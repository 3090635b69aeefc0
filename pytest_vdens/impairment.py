"""Link impairment with vde2's wirefilter: delay, jitter, loss, duplication, rate.

The kernel here has no sch_netem, and a user namespace cannot load it, so the
impaired link goes through a real VDE component instead: the host's tap moves
to a private switch, and a wirefilter joins that switch to the network. Its
management socket changes the impairment while the test runs. Each value
applies to frames in both directions.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from ._prctl import prctl
from .errors import ArgumentError, Unavailable

KEYS = ("delay", "jitter", "loss", "dup", "rate")
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def _ms(name: str, value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value) * 1000  # seconds
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*([\d.]+)\s*(us|ms|s)\s*", value)):
        ms = float(m[1]) * {"us": 0.001, "ms": 1, "s": 1000}[m[2]]
    else:
        raise ArgumentError(f"{name}={value!r}: give seconds (0.05) or a string like '50ms'")
    if ms < 0:
        raise ArgumentError(f"{name}={value!r} is negative; a delay is >= 0")
    return ms


def _fraction(name: str, value: object, top: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
        raise ArgumentError(f"{name}={value!r}: give a fraction from 0 to {top} (e.g. 0.05 for 5%)")
    return float(value)


def _rate(value: object) -> float:
    """Bits per second from 8000000, '8mbit', '512kbit'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bits = float(value)
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*([\d.]+)\s*([kmg]?)bit\s*", value.lower())):
        bits = float(m[1]) * _UNITS[m[2]]
    else:
        raise ArgumentError(f"rate={value!r}: give bits per second (8000000) or e.g. '8mbit'")
    if bits < 800:
        raise ArgumentError(f"rate={value!r} is below 800 bit/s (100 bytes/s), wirefilter's least")
    return bits


def commands(params: dict[str, object]) -> list[str]:
    """wirefilter management commands for user-facing impairment values."""
    unknown = sorted(set(params) - set(KEYS))
    if unknown:
        raise ArgumentError(f"unknown impairment {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    delay = _ms("delay", params.get("delay", 0))
    jitter = _ms("jitter", params.get("jitter", 0))
    if jitter > delay:
        raise ArgumentError(f"jitter={params.get('jitter')!r} exceeds delay="
                            f"{params.get('delay', 0)!r}: a delay cannot go below 0")
    out = [f"delay {delay:g}+{jitter:g}U" if jitter else f"delay {delay:g}",
           f"loss {_fraction('loss', params.get('loss', 0), 1) * 100:g}",
           f"dup {_fraction('dup', params.get('dup', 0), 0.99) * 100:g}"]
    rate = params.get("rate")
    out.append(f"bandwidth {0 if rate is None else _rate(rate) / 8:.0f}")
    return out


class WireFilter:
    """A wirefilter process joining two VDE switch directories."""

    def __init__(self, left: str, right: str, mgmt: str, serve: Callable[[], None]) -> None:
        exe = shutil.which("wirefilter")
        if exe is None:
            raise Unavailable("link impairment needs vde2's wirefilter: `apt install vde2`")
        self.mgmt_path = mgmt
        # stdin stays open: without --daemon, wirefilter stops at its end
        self.proc = subprocess.Popen(
            [exe, "-v", f"{left}:{right}", "-M", mgmt], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: prctl.set_pdeathsig(signal.SIGKILL))
        self.mgmt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        while True:
            serve()  # our own switches must answer its handshakes meanwhile
            try:
                self.mgmt.connect(mgmt)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise Unavailable(f"wirefilter between {left} and {right} did not start") from None
        self.mgmt.settimeout(10)
        self._answer()  # the banner

    def _answer(self) -> str:
        data = b""
        while not data.endswith(b"VDEwf$ "):
            chunk = self.mgmt.recv(4096)
            if not chunk:
                raise OSError("wirefilter closed its management socket")
            data += chunk
        return data.decode(errors="replace")

    def set(self, params: dict[str, object]) -> None:
        for command in commands(params):
            self.mgmt.sendall(command.encode() + b"\n")
            answer = self._answer()
            if "1000 Success" not in answer:
                raise ArgumentError(f"wirefilter refused {command!r}: {answer.strip()}")

    def close(self) -> None:
        self.mgmt.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            os.unlink(self.mgmt_path)
        except FileNotFoundError:
            pass
