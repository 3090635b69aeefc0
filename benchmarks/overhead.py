"""Case 1: per-test overhead of generated suites, each variant against a plain suite.

Every test checks, cheaply, that it got what a user relies on: a namespace of its
own (not the host's network namespace), with its vde0; marked tests also check
that their network stack is fresh (a per-netns sysctl still has its default, then
they change it). Case 1 also runs an untimed isolation suite (`verify`) that checks
freshness for fixture namespaces too, from inside.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import Bench, Timed, VdePlugSwitch, log, median, need

VARIANTS = ("plain", "fixture", "marked", "session", "anchor", "floor", "forked")
LABELS = {
    "plain": "plain suite (reference)",
    "fixture": "(a) vdens_ns fixture, 1 iface, embedded switch",
    "marked": "(b) @pytest.mark.vdens (forked, runs inside)",
    "session": "(c) @pytest.mark.vdens(scope=\"session\")",
    "anchor": "(d) anchor: subprocess `vdens vde://SW true`",
    "floor": "(e) floor: subprocess `unshare -rn true`",
    "forked": "(f) floor for (b): a fork per test (as pytest-forked), no namespace",
}

HELPERS = '''\
"""Shared by the generated tests: cheap checks that each test got its own network stack."""
import os
import select
import socket
import subprocess

from benchmarks.common import vdens_hung

HOST_NET = os.readlink("/proc/self/ns/net")
VDENS = {vdens!r}
UNSHARE = {unshare!r}
SW = os.environ.get("VBENCH_VDENS_SW", "")
TTL = "/proc/sys/net/ipv4/ip_default_ttl"  # per network namespace


def plain():
    assert os.readlink("/proc/self/ns/net") == HOST_NET


def outside(ns):
    """A fixture namespace, seen from the test process."""
    assert ns.interfaces == ("vde0",), ns.interfaces
    assert os.readlink(f"/proc/{{ns.init_pid}}/ns/net") != HOST_NET


def mark_fresh():
    """Inside: True if this network stack was never marked before; marks it."""
    with open(TTL, "r+") as f:
        fresh = f.read().strip() == "64"
        f.seek(0)
        f.write("65")
    return fresh


def inside(fresh):
    """A marked test, running inside its namespace."""
    assert os.readlink("/proc/self/ns/net") != HOST_NET
    assert "vde0" in {{name for _, name in socket.if_nameindex()}}
    if fresh:
        assert mark_fresh(), "this network namespace was used by an earlier test"


def anchor():
    assert SW, "VBENCH_VDENS_SW is not set"
    proc = subprocess.Popen([VDENS, SW, "true"])
    # Wait on a pidfd: it wakes at once (Popen.wait(timeout) polls with growing sleeps).
    # vdens can miss its command's exit and wait forever (benchmarks.common.vdens_hung):
    # look for that every 10 ms, and end such a vdens at once (its exit closes the tap,
    # as its own would have).
    pidfd = os.pidfd_open(proc.pid)
    try:
        suspect = 0
        while not select.select([pidfd], [], [], 0.01)[0]:
            suspect = suspect + 1 if vdens_hung(proc.pid) else 0
            if suspect >= 2:
                proc.kill()
                with open(os.environ["VBENCH_HANGS"], "a") as f:
                    f.write("hang\\n")
                break
        proc.wait()
    finally:
        os.close(pidfd)


def floor():
    subprocess.run([UNSHARE, "-rn", "true"], check=True)
'''

BODIES = {
    "plain": ("", "", "_vb.plain()"),
    "fixture": ("", "vdens_ns", "_vb.outside(vdens_ns)"),
    "marked": ("@pytest.mark.vdens\n", "", "_vb.inside(fresh=True)"),
    "session": ('@pytest.mark.vdens(scope="session")\n', "", "_vb.inside(fresh=False)"),
    "anchor": ("", "", "_vb.anchor()"),
    "floor": ("", "", "_vb.floor()"),
    "forked": ("", "", "_vb.plain()"),  # with FORKED as the suite's conftest
}

VERIFY_TESTS = '''\
import os
import pytest
import _vb


@pytest.mark.parametrize("i", range({n}))
def test_fixture_namespace_is_fresh(vdens_ns, i):
    _vb.outside(vdens_ns)
    assert vdens_ns.call(_vb.mark_fresh), "fixture namespace reused a marked network stack"


@pytest.mark.vdens
@pytest.mark.parametrize("i", range({n}))
def test_marked_namespace_is_fresh(i):
    _vb.inside(fresh=True)


def test_factory_namespaces_are_distinct(make_vdens_ns):
    spaces = [make_vdens_ns() for _ in range(5)]
    nets = {{os.readlink(f"/proc/{{ns.init_pid}}/ns/net") for ns in spaces}}
    assert len(nets) == 5 and _vb.HOST_NET not in nets


@pytest.mark.vdens(scope="session")
@pytest.mark.parametrize("i", range(3))
def test_session_namespace(i):
    _vb.inside(fresh=False)
'''


# (f): what running each test in a child of pytest costs alone, the way a marked test
# runs (one fork, the reports pickled back through a pipe), without any namespace.
# pytest-forked itself is not used: its 1.7 fails every test on pytest 9 (its
# marshal cannot serialize pytest 9's reports).
FORKED = '''\
import os
import pickle

import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    hook, config = item.ihook, item.config
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            out = [config.hook.pytest_report_to_serializable(config=config, report=x) for x in reports]
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    for x in pickle.loads(data):
        report = config.hook.pytest_report_from_serializable(config=config, data=x)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
'''


def write_suite(d: Path, tests: str, conftest: str = "") -> None:
    d.mkdir(parents=True, exist_ok=True)
    if conftest:
        (d / "conftest.py").write_text(conftest)
    (d / "pytest.ini").write_text("[pytest]\n")
    (d / "_vb.py").write_text(HELPERS.format(vdens=shutil.which("vdens"),
                                             unshare=shutil.which("unshare")))
    (d / "test_gen.py").write_text(tests)


def generate(d: Path, variant: str, n: int) -> None:
    deco, arg, body = BODIES[variant]
    parts = ["import pytest\nimport _vb\n"]
    for i in range(n):
        parts.append(f"\n{deco}def test_{i}({arg}):\n    {body}\n")
    write_suite(d, "".join(parts), FORKED if variant == "forked" else "")


def run_pytest(bench: Bench, d: Path, n_expected: int, *args: str, env: dict[str, str] | None = None,
               timeout: float = 900) -> Timed:
    """Wall time of `python -m pytest -q -p no:cacheprovider DIR`; ok if all passed."""
    # hypothesis's plugin, if installed, adds ~1 s of imports (and noise) to every run
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
           *args, str(d)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=d, env=env or bench.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        partial = e.stdout or b""
        text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        return Timed(time.perf_counter() - t0, False, f"timed out after {timeout}s\n{text[-1500:]}")
    wall = time.perf_counter() - t0
    out = r.stdout + r.stderr
    ok = r.returncode == 0 and f"{n_expected} passed" in out
    return Timed(wall, ok, "" if ok else f"exit {r.returncode}: {summary(out)}")


def summary(out: str) -> str:
    """The distinct error lines (pytest's `E ...`) of a failed run, and its last line."""
    errors: list[str] = []
    for line in out.splitlines():
        if line.startswith("E ") and line.strip() not in errors:
            errors.append(line.strip())
    lines = out.strip().splitlines()
    return " | ".join(errors[:6] + (lines[-1:] if lines else []))[:3000]


def verify(bench: Bench, quick: bool) -> dict[str, Any]:
    """Untimed: each namespace gets its own, fresh network stack (fixture and marker)."""
    n = 5 if quick else 20
    d = bench.root / "suites" / "verify"
    write_suite(d, VERIFY_TESTS.format(n=n))
    r = run_pytest(bench, d, 2 * n + 1 + 3)
    return {"ok": r.ok, "tests": 2 * n + 4, "detail": r.detail}


def run(bench: Bench, ns: list[int], reps: int) -> dict[str, Any]:
    need("vdens", "vdens")
    need("unshare", "util-linux")
    suites = bench.dir("suites")
    dirs = {}
    for v in VARIANTS:
        for n in ns:
            dirs[v, n] = suites / f"{v}-{n}"
            generate(dirs[v, n], v, n)
    walls: dict[str, dict[int, list[float]]] = {v: {n: [] for n in ns} for v in VARIANTS}
    failures: list[str] = []
    hangs: list[dict[str, int]] = []  # vdens that missed their command's exit (then killed)
    with VdePlugSwitch(bench, "anchor-sw") as sw:
        hangs_file = bench.root / "vdens-hangs"
        env = dict(bench.env, VBENCH_VDENS_SW=sw.url, VBENCH_HANGS=str(hangs_file))
        for rep in range(reps):
            for k, n in enumerate(ns):
                # rotate the order so that drift hits every variant alike
                shift = (rep + k) % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                line = []
                for v in order:
                    r = run_pytest(bench, dirs[v, n], n, env=env)
                    if not r.ok:
                        failures.append(f"{v} N={n} rep {rep + 1}: {r.detail}")
                        log(f"  FAILED {v} N={n}: {r.detail[-800:]}")
                    walls[v][n].append(r.wall if r.ok else math.nan)
                    if hangs_file.exists():
                        hangs.append({"n": n, "rep": rep + 1,
                                      "count": len(hangs_file.read_text().split())})
                        hangs_file.unlink()
                    line.append(f"{v}={r.wall:.2f}s")
                log(f"  overhead rep {rep + 1}/{reps} N={n}: " + " ".join(line))
    # added ms per test, paired with the plain run of the same repetition
    per_run: dict[str, dict[int, list[float]]] = {v: {} for v in VARIANTS if v != "plain"}
    for v in per_run:
        for n in ns:
            pairs = zip(walls[v][n], walls["plain"][n])
            per_run[v][n] = [(w - p) / n * 1000 for w, p in pairs
                             if not (math.isnan(w) or math.isnan(p))]
    added = {v: {n: median(per_run[v][n]) for n in ns} for v in per_run}
    return {"ns": ns, "reps": reps, "walls": {v: {str(n): x for n, x in d.items()} for v, d in walls.items()},
            "per_run_ms": {v: {str(n): x for n, x in d.items()} for v, d in per_run.items()},
            "added_ms": {v: {str(n): x for n, x in d.items()} for v, d in added.items()},
            "failures": failures, "vdens_hangs": hangs}
