"""Faults: killed workers, hangs, dying switches, crashing tests, threads, long runs.

Each test checks afterwards that nothing was left behind: no process, no
namespace, no directory, no tap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vdens import Namespace
from pytest_vdens.client import helper

from .conftest import alive, holders_of, settled, wait_until

pytestmark = pytest.mark.timeout(300)

# The suites under test note what they made in TRACE, one JSON object a line.
SUITE_CONFTEST = """
import json, os, subprocess
import pytest
from pytest_vdens.client import helper

TRACE = {trace!r}


def note(**what):
    with open(TRACE, "a") as f:
        f.write(json.dumps(what) + "\\n")


def net_of(ns):
    return ns.call(os.readlink, "/proc/self/ns/net")


def daemon(ns):
    # detached from the command that started it, as daemons are
    ns.run(["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"], check=True)


def start_daemon():
    # the same, from code running inside
    subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session", autouse=True)
def the_helper():
    h = helper()
    note(helper=h.pid, tmpdir=h.tmpdir, worker=os.environ.get("PYTEST_XDIST_WORKER", "-"),
         pytest=os.getpid())
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def suite(pytester: pytest.Pytester, tests: str) -> Path:
    """Write a suite whose tests can note() what they make; the trace file's path."""
    trace = pytester.path / "trace.jsonl"
    pytester.makeconftest(SUITE_CONFTEST.format(trace=str(trace)))
    pytester.makepyfile(textwrap.dedent(tests))
    return trace


def records(trace: Path) -> list[dict[str, Any]]:
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines()]


def host_taps() -> set[str]:
    """tun/tap devices in this network namespace."""
    return {d for d in os.listdir("/sys/class/net") if os.path.exists(f"/sys/class/net/{d}/tun_flags")}


def leftovers(notes: list[dict[str, Any]]) -> list[str]:
    """What is still there of the helpers, namespaces, directories and processes noted."""
    left = []
    for note in notes:
        for key in ("helper", "pid"):
            if key in note and alive(note[key]):
                left.append(f"{key} {note[key]} runs")
        for key in ("tmpdir", "switch"):
            path = note.get(key, "").removeprefix("vde://")
            if path and os.path.exists(path):
                left.append(f"{key} {path} exists")
        if "net" in note:
            left += [f"{note['net']} is held by {h}" for h in holders_of(note["net"])]
    return left


def assert_all_gone(notes: list[dict[str, Any]], taps_before: set[str], within: float = 2.0) -> None:
    assert any("net" in n for n in notes) and any("helper" in n for n in notes), notes
    wait_until(lambda: not leftovers(notes), within)
    assert leftovers(notes) == []
    assert host_taps() <= taps_before


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory with a short path: a switch's socket path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="pytest-faults-") as path:
        yield path


# -- 1. the test process is killed ---------------------------------------------------------

KILLED_SUITE = """
    import os, time
    import pytest
    from conftest import daemon, net_of, note, start_daemon


    def test_session_namespace(vdens_session_ns):
        daemon(vdens_session_ns)
        note(net=net_of(vdens_session_ns))


    @pytest.fixture(scope="module")
    def long_lived(vdens_session_ns):
        from pytest_vdens import Namespace
        with Namespace([vdens_session_ns.nets[0], "slirp://"]) as ns:
            yield ns


    def test_hosts(make_vdens_ns, vdens_switch, long_lived):
        for ns in (make_vdens_ns(), make_vdens_ns(), long_lived):
            daemon(ns)
            note(net=net_of(ns))
        note(switch=vdens_switch)


    @pytest.mark.vdens
    def test_blocks_inside(vdens_switch, long_lived):
        start_daemon()
        note(net=os.readlink("/proc/self/ns/net"), switch=vdens_switch,
             pid=int(os.readlink("/proc/self")))
        note(ready=True)
        time.sleep(1000)
"""


def test_killing_pytest_mid_suite_leaves_nothing(pytester: pytest.Pytester, short_dir: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    trace = suite(pytester, KILLED_SUITE)
    taps = host_taps()
    # a TMPDIR of its own: a helper started elsewhere meanwhile would remove stale directories
    monkeypatch.setenv("TMPDIR", short_dir)
    with open(pytester.path / "out", "w") as out:
        proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"],
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: any(n.get("ready") for n in records(trace)), 60), \
            (pytester.path / "out").read_text()
    finally:
        proc.kill()
        proc.wait()
    notes = records(trace)
    assert len([n for n in notes if "net" in n]) == 5  # session, two per test, long-lived, inside
    assert_all_gone(notes, taps)


NESTED_SUITE = """
    import os, time
    import pytest
    from pytest_vdens.client import helper
    from conftest import net_of, note


    @pytest.mark.vdens
    def test_blocks_with_a_namespace_of_its_own(make_vdens_ns):
        inner = make_vdens_ns()
        note(net=net_of(inner), tmpdir=helper().tmpdir)
        note(ready=True)
        time.sleep(1000)
"""


def test_killing_pytest_leaves_nothing_of_a_nested_helper(
        pytester: pytest.Pytester, short_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = suite(pytester, NESTED_SUITE)
    taps = host_taps()
    # a TMPDIR of its own: a helper started elsewhere meanwhile would remove stale directories
    monkeypatch.setenv("TMPDIR", short_dir)
    with open(pytester.path / "out", "w") as out:
        proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: any(n.get("ready") for n in records(trace)), 60)
    finally:
        proc.kill()
        proc.wait()
    assert_all_gone(records(trace), taps)


BURST = """
import json, os
from pytest_vdens import Namespace, Switch
from pytest_vdens.client import helper

with Switch() as sw:
    held = Namespace(nets=[sw.url])
    print(json.dumps({"helper": helper().pid, "tmpdir": helper().tmpdir, "switch": sw.url,
                      "net": held.call(os.readlink, "/proc/self/ns/net")}), flush=True)
    while True:
        spaces = [Namespace(nets=[sw.url, None]) for _ in range(4)]
        for ns in spaces:
            ns.close()
"""


def test_a_program_killed_at_any_moment_of_a_burst_leaves_nothing(
        pytester: pytest.Pytester, short_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the helper learns of its parent's death by a signal, whatever it is doing:
    # answering, making namespaces ahead, closing them
    script = pytester.makepyfile(burst=BURST)
    taps = host_taps()
    monkeypatch.setenv("TMPDIR", short_dir)
    for delay in [0.02 * i for i in range(20)]:
        proc = pytester.popen([sys.executable, str(script)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            notes = [json.loads(proc.stdout.readline())]
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
        assert_all_gone(notes, taps)


XDIST_KILL_SUITE = """
    import os, signal, socket
    import pytest
    from pytest_vdens.client import helper
    from conftest import daemon, net_of, note


    @pytest.mark.vdens
    @pytest.mark.parametrize("n", range(6))
    def test_port_80_inside(n):
        with socket.create_server(("127.0.0.1", 80)):
            pass


    @pytest.mark.parametrize("n", range(4))
    def test_two_hosts(make_vdens_ns, n):
        a, b = make_vdens_ns(), make_vdens_ns()
        for ns, ip in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
            ns.run(["ip", "addr", "add", ip, "dev", "vde0"], check=True)
            ns.run(["ip", "link", "set", "vde0", "up"], check=True)
        assert a.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0


    def test_kills_its_worker(make_vdens_ns, vdens_switch):
        ns = make_vdens_ns()
        daemon(ns)
        note(killed=os.environ["PYTEST_XDIST_WORKER"], net=net_of(ns), switch=vdens_switch,
             helper=helper().pid, tmpdir=helper().tmpdir, pid=os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_xdist_worker_takes_only_its_own_things_with_it(pytester: pytest.Pytester) -> None:
    trace = suite(pytester, XDIST_KILL_SUITE)
    taps = host_taps()
    start = time.monotonic()
    with open(pytester.path / "out", "w") as out:
        proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"],
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        # watched while the other worker goes on
        assert wait_until(lambda: any("killed" in n for n in records(trace)), 60)
        killed = [n for n in records(trace) if "killed" in n]
        assert_all_gone(killed, taps)
        proc.wait(120)
    finally:
        proc.kill()
        proc.wait()
    lines = (pytester.path / "out").read_text().splitlines()
    result = pytest.RunResult(proc.returncode, lines, [], time.monotonic() - start)
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw?' crashed while running*test_kills_its_worker*"])


# -- 2. a test hangs -----------------------------------------------------------------------

HANGING_SUITE = """
    import os, socket, time
    import pytest
    from conftest import net_of, note, start_daemon


    @pytest.mark.vdens
    @pytest.mark.timeout(1, method="signal")
    def test_hangs_inside_signal():
        start_daemon()
        note(net=os.readlink("/proc/self/ns/net"), pid=int(os.readlink("/proc/self")))
        time.sleep(1000)


    @pytest.mark.vdens
    @pytest.mark.timeout(1, method="thread")
    def test_hangs_inside_thread():
        start_daemon()
        note(net=os.readlink("/proc/self/ns/net"), pid=int(os.readlink("/proc/self")))
        time.sleep(1000)


    @pytest.fixture
    def stuck():
        time.sleep(1000)


    @pytest.mark.vdens
    @pytest.mark.timeout(1, method="thread")
    def test_hangs_in_a_fixture_inside(stuck):
        pass


    @pytest.mark.timeout(1, method="signal")
    def test_hangs_on_a_command_inside(make_vdens_ns):
        ns = make_vdens_ns()
        note(net=net_of(ns))
        ns.run(["sleep", "1000"])


    @pytest.mark.vdens
    def test_next_inside():
        with socket.create_server(("127.0.0.1", 80)):
            pass


    def test_next_outside(make_vdens_ns):
        assert make_vdens_ns().run(["true"]).returncode == 0
"""


def test_a_hanging_test_is_ended_by_pytest_timeout_and_cleaned_up(pytester: pytest.Pytester) -> None:
    trace = suite(pytester, HANGING_SUITE)
    taps = host_taps()
    start = time.monotonic()
    result = run(pytester)
    assert time.monotonic() - start < 60
    result.assert_outcomes(passed=2, failed=3, errors=1)
    # the short summary's lines are cut to the terminal's width, so count above it
    details = result.stdout.str().split("short test summary info")[0]
    assert details.count("Timeout (>1.0s) from pytest-timeout") == 4, details
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_hangs_in_a_fixture_inside*",
        "*stopped inside its namespace, during setup*",
        "*in stuck*",
        "*test_hangs_inside_signal*",
        "*time.sleep(1000)*",
        "*Failed: Timeout (>1.0s) from pytest-timeout.*",
        "*test_hangs_inside_thread*",
        "*stopped inside its namespace, during call*",
        "*line * in test_hangs_inside_thread*",
    ])
    assert_all_gone(records(trace), taps)


def test_a_thread_timeout_outside_ends_the_worker_and_its_namespaces(pytester: pytest.Pytester) -> None:
    # pytest-timeout's thread method ends the process; xdist starts a new worker
    trace = suite(pytester, """
        import pytest
        from conftest import daemon, net_of, note


        @pytest.mark.timeout(1, method="thread")
        def test_hangs_on_a_command_inside(make_vdens_ns):
            ns = make_vdens_ns()
            daemon(ns)
            note(net=net_of(ns))
            ns.run(["sleep", "1000"])


        def test_next(make_vdens_ns):
            assert make_vdens_ns().run(["true"]).returncode == 0
    """)
    taps = host_taps()
    result = run(pytester, "-n", "1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*crashed while running*test_hangs_on_a_command_inside*"])
    assert_all_gone(records(trace), taps)


def test_a_test_returns_even_if_it_leaves_processes_inside(pytester: pytest.Pytester) -> None:
    # a forked child keeps the report pipe open: the end is the test process's exit
    suite(pytester, """
        import os, subprocess, time
        import pytest


        @pytest.mark.vdens
        def test_leaves_a_forked_child():
            if os.fork() == 0:
                time.sleep(1000)
                os._exit(0)


        @pytest.mark.vdens
        def test_leaves_a_program():
            subprocess.Popen(["sleep", "1000"], close_fds=False)
    """)
    start = time.monotonic()
    run(pytester).assert_outcomes(passed=2)
    assert time.monotonic() - start < 30


# -- 3. the external switch dies -----------------------------------------------------------

DYING_SWITCH_SUITE = """
    import os, socket, subprocess, time
    import pytest
    from pytest_vdens.client import helper
    from conftest import note

    A, B = {a!r}, {b!r}


    def listening(path):
        with socket.socket(socket.AF_UNIX) as s:
            return s.connect_ex(path + "/ctl") == 0


    @pytest.fixture(scope="session")
    def switches():
        procs = {{path: subprocess.Popen(["vde_switch", "-s", path], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for path in (A, B)}}
        for path in procs:
            while not listening(path):
                time.sleep(0.01)
        yield procs
        for proc in procs.values():
            proc.kill()
            proc.wait()


    def up(run):
        run(["ip", "link", "set", "vde0", "up"], check=True)


    def carrier_lost(run):
        out = run(["ip", "link", "show", "vde0"], capture_output=True, text=True).stdout
        return "NO-CARRIER" in out


    @pytest.mark.vdens(nets=[A])
    def test_inside_when_its_switch_shuts_down(switches):
        up(subprocess.run)
        switches[A].stdin.write(b"shutdown\\n")  # its console: no pid to kill from in here
        switches[A].stdin.flush()
        while not carrier_lost(subprocess.run):
            time.sleep(0.01)


    def test_outside_when_its_switch_is_killed(switches, make_vdens_ns):
        note(helper=helper().pid)
        ns = make_vdens_ns([B])
        up(ns.run)
        switches[B].kill()
        while not carrier_lost(ns.run):
            time.sleep(0.01)


    def test_later_on_another_network(make_vdens_ns):
        a, b = make_vdens_ns(), make_vdens_ns()
        for ns, ip in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
            ns.run(["ip", "addr", "add", ip, "dev", "vde0"], check=True)
            up(ns.run)
        assert a.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0
        note(helper=helper().pid)


    @pytest.mark.vdens
    def test_later_inside():
        pass
"""


def test_a_dying_switch_fails_its_tests_by_name_and_the_rest_go_on(
        pytester: pytest.Pytester, short_dir: str) -> None:
    a, b = (os.path.join(short_dir, name) for name in ("switch-a", "switch-b"))
    trace = pytester.path / "trace.jsonl"
    pytester.makeconftest(SUITE_CONFTEST.format(trace=str(trace)))
    pytester.makepyfile(textwrap.dedent(DYING_SWITCH_SUITE).format(a=a, b=b))
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*_ test_inside_when_its_switch_shuts_down _*",
        "pytest-vdens: a network of this test went away:",
        f"VDE network '{a}' of vde0 went away: the switch closed its control connection",
        "*_ test_outside_when_its_switch_is_killed _*",
        "pytest-vdens: a network of this test went away:",
        f"VDE network '{b}' of vde0 went away: *",
    ])
    helpers = {n["helper"] for n in records(trace) if "helper" in n}
    assert len(helpers) == 1  # the same helper served before and after


def test_a_network_that_dies_during_a_failing_test_is_added_to_its_report(
        pytester: pytest.Pytester, short_dir: str) -> None:
    switch = os.path.join(short_dir, "switch")
    pytester.makepyfile(f"""
        import socket, subprocess

        def test_fails_after_its_switch_died(make_vdens_ns):
            proc = subprocess.Popen(["vde_switch", "-s", {switch!r}], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with socket.socket(socket.AF_UNIX) as s:
                while s.connect_ex({switch!r} + "/ctl"):
                    pass
            ns = make_vdens_ns([{switch!r}])
            ns.run(["ip", "link", "set", "vde0", "up"], check=True)
            proc.kill()
            proc.wait()
            while "NO-CARRIER" not in ns.run(["ip", "link", "show", "vde0"],
                                             capture_output=True, text=True).stdout:
                pass
            assert False, "the test's own failure"
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the test's own failure*",
                                 "*- pytest-vdens -*",
                                 f"VDE network '{switch}' of vde0 went away: *"])


# -- 4. the test process crashes -----------------------------------------------------------

def test_memory_exhaustion_inside_is_reported_and_the_session_goes_on(pytester: pytest.Pytester) -> None:
    trace = suite(pytester, """
        import os, resource
        import pytest
        from conftest import note


        @pytest.mark.vdens
        def test_runs_out_of_memory():
            with open("/proc/self/status") as f:
                size = next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20),) * 2)
            hog = []
            while True:
                hog.append(bytearray(8 << 20))


        @pytest.mark.vdens
        def test_asks_for_too_much():
            bytearray(1 << 60)


        @pytest.mark.vdens
        def test_next_inside():
            pass


        def test_same_process(the_helper):
            note(last=os.getpid())
    """)
    result = run(pytester)
    result.assert_outcomes(failed=2, passed=2)
    result.stdout.fnmatch_lines(["*_ test_runs_out_of_memory _*", "*hog.append(*",
                                 "E *MemoryError", "*_ test_asks_for_too_much _*",
                                 "E *MemoryError"])
    notes = records(trace)
    assert [n["pytest"] for n in notes if "pytest" in n] == [n["last"] for n in notes if "last" in n]


# -- 5. forking with threads ---------------------------------------------------------------

def test_marked_tests_run_and_report_while_fixtures_run_threads(pytester: pytest.Pytester) -> None:
    suite(pytester, """
        import http.server, logging, socket, threading, time, urllib.request
        import pytest


        @pytest.fixture(scope="session")
        def web():
            # a server on a thread of the pytest process (a typical session fixture)
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            yield srv.server_address[1]
            srv.shutdown()


        @pytest.fixture(scope="session")
        def ticker():
            # a thread that logs now and then, and one that just waits
            stop = threading.Event()
            def tick():
                while not stop.wait(0.05):
                    logging.getLogger("ticker").warning("tick")
            threads = [threading.Thread(target=tick), threading.Thread(target=stop.wait)]
            for t in threads:
                t.start()
            yield
            stop.set()
            for t in threads:
                t.join()


        @pytest.mark.vdens
        @pytest.mark.parametrize("n", range(10))
        def test_inside(web, ticker, n):
            assert threading.active_count() == 1  # only the forking thread comes along
            print("inside", n)
            logging.getLogger("test").warning("inside %d", n)
            with socket.create_server(("127.0.0.1", 80)):
                pass


        def test_outside(web, ticker):
            assert threading.active_count() >= 4
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/") as page:
                assert page.status == 200


        held = threading.Lock()


        @pytest.fixture(scope="session")
        def holder():
            # a thread that holds a lock when the test forks: the known hazard
            got = threading.Event()
            release = threading.Event()
            def hold():
                with held:
                    got.set()
                    release.wait()
            t = threading.Thread(target=hold)
            t.start()
            got.wait()
            yield
            release.set()
            t.join()


        @pytest.mark.vdens
        @pytest.mark.timeout(1)
        def test_needs_the_lock_a_thread_held(holder):
            with held:
                pass


        @pytest.mark.vdens
        def test_after():
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(passed=12, failed=1)
    result.stdout.fnmatch_lines(["*def test_needs_the_lock_a_thread_held*", "*with held:*",
                                 "*Failed: Timeout (>1.0s) from pytest-timeout.*"])


# -- 6. a long run ---------------------------------------------------------------------------

CYCLES = 2000


def _state() -> tuple[int, int, int, int]:
    h = helper()
    h.request("drain")  # the namespaces it made ahead depend on timing
    fds = len(os.listdir(f"/proc/{h.pid}/fd"))
    taps = 0
    for fd in os.listdir(f"/proc/{h.pid}/fdinfo"):
        try:
            with open(f"/proc/{h.pid}/fdinfo/{fd}") as f:
                taps += "iff:" in f.read()
        except OSError:
            pass
    with open(f"/proc/{h.pid}/task/{h.pid}/children") as f:
        children = len(f.read().split())
    return len(os.listdir("/proc/self/fd")), fds, taps, children


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_soak_thousands_of_namespaces_leave_the_helper_as_it_was(
        record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(50):  # warm up: the pool, the switch, the allocator
        Namespace().close()
    h = helper()
    before, rss_before = settled(_state), _rss_kib(h.pid)
    start = time.perf_counter()
    for _ in range(CYCLES):
        with Namespace() as ns:
            assert ns.interfaces == ("vde0",)
    elapsed = time.perf_counter() - start
    after, rss_after = settled(_state), _rss_kib(h.pid)
    assert helper().pid == h.pid
    # (our fds, helper fds, helper's taps, helper's children)
    assert after == before
    assert rss_after - rss_before < 2048, f"helper RSS grew {rss_after - rss_before} KiB"
    summary = (f"soak: {CYCLES} namespaces in {elapsed:.1f} s ({CYCLES / elapsed:.0f}/s); "
               f"fds/helper fds/taps/children {before} -> {after}; "
               f"helper RSS {rss_before} -> {rss_after} KiB")
    record_property("soak", summary)
    with capsys.disabled():
        print(f"\n{summary}")
