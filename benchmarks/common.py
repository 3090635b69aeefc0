"""What every case needs: a private temp dir, subprocess helpers, real VDE switches,
and the check that nothing is left behind."""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PR_SET_CHILD_SUBREAPER = 36
WATCHED = ("vdens-helper", "vdens-zygote", "vdens-init", "vde_plug", "vdens", "vde_switch", "iperf3")


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> tuple[float, float]:
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def need(exe: str, package: str) -> str:
    path = shutil.which(exe)
    if path is None:
        raise SystemExit(f"benchmarks: `{exe}` is not installed; apt-get install -y {package}")
    return path


@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    comm: str

    def cmdline(self) -> str:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""


def processes() -> dict[int, Proc]:
    out: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        rest = data[data.rindex(")") + 2:].split()
        out[int(name)] = Proc(int(name), int(rest[1]), rest[0], comm)
    return out


def descendants(root: int | None = None) -> list[Proc]:
    """Every process below `root` (default: this one), found through /proc."""
    root = os.getpid() if root is None else root
    procs = processes()
    children: dict[int, list[Proc]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


class Bench:
    """The run's shared state: its private TMPDIR, and what was found left behind.

    This process becomes a child subreaper, so whatever the benchmark starts stays
    below it even when orphaned (a killed vdens leaves its command behind, a helper
    outlives a crashed pytest): leftovers are found by ancestry, not by name, which
    keeps other users' processes on a shared machine out of the count.
    """

    def __init__(self, keep: bool = False) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log("benchmarks: warning: cannot become a child subreaper; orphaned "
                "leftovers may go unnoticed")
        self.root = Path(tempfile.mkdtemp(prefix="vbench-", dir="/tmp"))
        self.tmp = self.root / "tmp"  # TMPDIR of everything started: helpers' dirs land here
        self.tmp.mkdir()
        self.keep = keep
        self.leftovers: list[str] = []
        self.global_before = set(Path("/tmp").glob("pytest-vdens-*"))
        self.env = dict(os.environ)
        for var in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_AUTO_NUM_WORKERS"):
            self.env.pop(var, None)
        self.env["TMPDIR"] = str(self.tmp)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def reap_orphans(self) -> None:
        """Reap zombie children this process does not otherwise wait for."""
        me = os.getpid()
        for p in processes().values():
            if p.ppid == me and p.state == "Z":
                try:
                    os.waitpid(p.pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def check_leftovers(self, where: str, grace: float = 10.0) -> list[str]:
        """After a case: nothing it started may still run, no pytest-vdens-* dir may remain.

        Waits up to `grace` seconds (teardown may be asynchronous), then records what
        is left, kills it and removes it, so that the benchmark leaves nothing behind.
        """
        deadline = time.monotonic() + grace
        while True:
            self.reap_orphans()
            left = [p for p in descendants() if p.pid != os.getpid()]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        found = []
        for p in left:
            found.append(f"{where}: process {p.pid} {p.comm!r} ({p.state}) "
                         f"still running: {p.cmdline()[:160]}")
        for p in left:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            time.sleep(0.2)
            self.reap_orphans()
        for d in sorted(self.tmp.glob("pytest-vdens-*")):
            found.append(f"{where}: directory {d} was left behind")
            shutil.rmtree(d, ignore_errors=True)
        self.leftovers += found
        for line in found:
            log("LEFTOVER", line)
        return found

    def global_new_dirs(self) -> list[str]:
        """/tmp/pytest-vdens-* dirs that appeared during the run (maybe someone else's)."""
        return sorted(str(d) for d in set(Path("/tmp").glob("pytest-vdens-*")) - self.global_before
                      if d.exists())

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class VdePlugSwitch:
    """`vde_plug switch://DIR null://`: the same switch kind as pytest-vdens's embedded one."""

    def __init__(self, bench: Bench, name: str) -> None:
        exe = need("vde_plug", "vdeplug")
        self.path = str(bench.root / name)
        self.url = f"vde://{self.path}"
        self.proc = subprocess.Popen([exe, f"switch://{self.path}", "null://"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=bench.env)
        deadline = time.monotonic() + 10
        while not _listening(os.path.join(self.path, "ctl")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"vde_plug switch://{self.path} null:// did not start")
            time.sleep(0.002)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # it removes DIR on SIGTERM
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> VdePlugSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process and everything below it (vdens does not pass signals on).

    Found through /proc rather than a process group: a new session would also be a
    new scheduler autogroup, which changes how the CPU is shared on a loaded machine,
    so everything the benchmark starts stays in its own session.
    """
    if proc.poll() is None:
        for p in [*descendants(proc.pid), Proc(proc.pid, 0, "", "")]:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def vdens_hung(pid: int) -> bool:
    """Whether vdens `pid` missed its command's exit and will wait forever.

    vdens 0.2 only blocks SIGCHLD inside ppoll(); a SIGCHLD that arrives while it is
    busy elsewhere is discarded (default disposition), so vdens never learns that its
    command is gone. Seen here: every child a zombie, vdens asleep in poll, and no
    SIGCHLD pending.
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        if not children:
            return False
        for child in children:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        with open(f"/proc/{pid}/wchan") as f:
            if "poll" not in f.read():
                return False
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & (1 << 16):
                    return False
    except (OSError, ValueError):
        return False
    return True


def wait_vdens(proc: subprocess.Popen[Any], timeout: float) -> str:
    """Wait for a vdens: "exited", "hung" (see vdens_hung; killed at once, which costs
    what its own exit would: closing the tap) or "timeout" (killed)."""
    if proc.poll() is not None:
        return "exited"
    # a pidfd wakes us the moment it exits (Popen.wait(timeout) polls with sleeps)
    pidfd = os.pidfd_open(proc.pid)
    try:
        deadline = time.monotonic() + timeout
        suspect = 0
        while True:
            if select.select([pidfd], [], [], 0.01)[0]:
                proc.wait()
                return "exited"
            suspect = suspect + 1 if vdens_hung(proc.pid) else 0
            if suspect >= 2 or time.monotonic() > deadline:
                kill_tree(proc)
                return "hung" if suspect >= 2 else "timeout"
    finally:
        os.close(pidfd)


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


@dataclass
class Timed:
    wall: float
    ok: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
