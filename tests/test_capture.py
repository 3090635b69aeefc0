"""Failure reports: pcap captures of every interface, and each namespace's network state."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pytest_vdens import Namespace, Switch
from pytest_vdens.capture import FLUSH_AT, LIMIT

pytestmark = pytest.mark.timeout(180)

SUITE = """
import socket, subprocess
import pytest

def ping(ns, host):
    return ns.run(["ping", "-c", "1", "-W", "2", host], capture_output=True).returncode

def test_talks_then_fails(make_vdens_ns):
    a = make_vdens_ns(addr=["10.7.0.1/24"])
    b = make_vdens_ns(addr=["10.7.0.2/24"])
    assert ping(a, "10.7.0.2") == 0
    with pytest.raises(ConnectionRefusedError):  # nobody listens: SYN, then RST
        a.connect(("10.7.0.2", 8080), timeout=5)
    assert False, "the server was not there"

def test_talks_and_passes(make_vdens_ns):
    a = make_vdens_ns(addr=["10.7.0.1/24"])
    make_vdens_ns(addr=["10.7.0.2/24"])
    assert ping(a, "10.7.0.2") == 0

@pytest.fixture
def server():  # function-scoped: it lives inside, with the test
    with socket.create_server(("0.0.0.0", 7777)) as s:
        yield s

@pytest.mark.vdens(addr=["10.7.0.5/24"])
def test_inside_fails(server):
    assert subprocess.run(["ping", "-c", "1", "-W", "1", "10.7.0.6"]).returncode == 0
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run with basetemp at ./bt (removed first: pytest only clears it when it uses it)."""
    shutil.rmtree(pytester.path / "bt", ignore_errors=True)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={pytester.path / 'bt'}",
                                         *args)


def pcaps(where: Path) -> list[str]:
    # rglob does not follow pytest's "<name>current" symlinks
    return sorted(str(p.relative_to(where)) for p in where.rglob("*.pcap"))


def tcpdump(path: str | Path) -> str:
    out = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True, check=True)
    return out.stdout


def test_a_failed_test_keeps_its_captures_and_reports_frames_and_state(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=2)
    bt = pytester.path / "bt"
    # failed tests keep one file per interface; the passing test keeps none
    assert pcaps(bt) == ["test_inside_fails0/vdens-capture/ns0/vde0.pcap",
                         "test_talks_then_fails0/vdens-capture/ns0/vde0.pcap",
                         "test_talks_then_fails0/vdens-capture/ns1/vde0.pcap"]
    a, b = (bt / f"test_talks_then_fails0/vdens-capture/ns{i}/vde0.pcap" for i in (0, 1))
    assert {p.stat().st_mode & 0o777 for p in (a, b)} == {0o600}  # private, as in the helper
    seen_by_a = tcpdump(a)
    assert "10.7.0.1 > 10.7.0.2: ICMP echo request" in seen_by_a
    assert re.search(r"10\.7\.0\.1\.\d+ > 10\.7\.0\.2\.8080: Flags \[S\]", seen_by_a)
    assert re.search(r"10\.7\.0\.2\.8080 > 10\.7\.0\.1\.\d+: Flags \[R\.\]", tcpdump(b))
    icmp = subprocess.run(["tshark", "-r", str(b), "-Y", "icmp", "-T", "fields", "-e", "ip.src",
                           "-e", "ip.dst", "-e", "icmp.type"], capture_output=True, text=True,
                          check=True).stdout.split("\n")
    assert icmp[:2] == ["10.7.0.1\t10.7.0.2\t8", "10.7.0.2\t10.7.0.1\t0"]

    out = result.stdout.str()
    report = out[out.index("_ test_talks_then_fails _"):out.index("_ test_inside_fails _")]
    assert f"{a}" in report and f"{b}" in report
    lines = report.splitlines()
    # the summary: time, host/interface, direction, what the frame is
    assert any(re.search(r"ns0/vde0 +out .*10\.7\.0\.1 > 10\.7\.0\.2 .*ICMP echo request", ln)
               for ln in lines), report
    assert any(re.search(r"ns1/vde0 +in .*10\.7\.0\.1 > 10\.7\.0\.2 .*ICMP echo request", ln)
               for ln in lines), report
    assert any(re.search(r"ns1/vde0 +out .*10\.7\.0\.2:8080 > 10\.7\.0\.1:\d+ .*TCP \[R\.\]", ln)
               for ln in lines), report
    # the state of each namespace, as it was when the test failed
    state = report[report.index("vdens network state"):]
    assert "ns0 (vde0 on vde://" in state and "10.7.0.1/24" in state
    assert "ns1 (vde0 on vde://" in state and "10.7.0.2/24" in state

    inside = out[out.index("_ test_inside_fails _"):]
    assert re.search(r"ARP.*10\.7\.0\.6.*10\.7\.0\.5", inside), inside  # the unanswered question
    assert re.search(r"0\.0\.0\.0:7777", inside), inside  # its listening socket
    assert "who-has 10.7.0.6 tell 10.7.0.5" in tcpdump(bt / "test_inside_fails0/vdens-capture/ns0/vde0.pcap")


def test_capture_always_no_and_the_marker_override(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE + """
@pytest.mark.vdens(capture="no", addr="auto")
def test_never_captured():
    assert False

def test_factory_always(make_vdens_ns):
    ping(make_vdens_ns(addr=["10.8.0.1/24"], capture="always"), "10.8.0.1")
""")
    result = run(pytester, "--vdens-capture=always", "-k", "passes or never or factory")
    result.assert_outcomes(passed=2, failed=1)
    assert pcaps(pytester.path / "bt") == [
        "test_factory_always0/vdens-capture/ns0/vde0.pcap",
        "test_talks_and_passes0/vdens-capture/ns0/vde0.pcap",
        "test_talks_and_passes0/vdens-capture/ns1/vde0.pcap"]
    assert "vdens capture" not in result.stdout.str()
    assert "vdens network state" in result.stdout.str()  # the state is there all the same

    result = run(pytester, "--vdens-capture=no", "-k", "talks_then_fails")
    result.assert_outcomes(failed=1)
    assert pcaps(pytester.path / "bt") == []
    assert "vdens capture" not in result.stdout.str()
    assert "10.7.0.2/24" in result.stdout.str()


def test_a_session_namespace_keeps_its_captures_if_a_test_using_it_failed(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="session")
        def host(vdens_session_ns):
            vdens_session_ns.run(["ip", "addr", "add", "10.6.0.1/24", "dev", "vde0"], check=True)
            vdens_session_ns.run(["ip", "link", "set", "vde0", "up"], check=True)
            return vdens_session_ns

        def test_passes(host):
            host.run(["ping", "-c", "1", "-W", "1", "10.6.0.2"])

        def test_fails(host):
            host.run(["ping", "-c", "1", "-W", "1", "10.6.0.3"])
            assert False
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    kept = pcaps(pytester.path / "bt")
    assert kept == ["session0/vdens-capture/session0/vde0.pcap"], kept  # written at session end
    shown = tcpdump(pytester.path / "bt" / kept[0])
    # the whole session's frames: both tests' ARP requests
    assert "who-has 10.6.0.2 tell 10.6.0.1" in shown and "who-has 10.6.0.3 tell 10.6.0.1" in shown
    result.stdout.fnmatch_lines(["*- vdens capture -*", "*/session0/vdens-capture/session0/vde0.pcap",
                                 "*session0/vde0 out ARP who-has 10.6.0.3 tell 10.6.0.1*"])
    run(pytester, "-k", "passes").assert_outcomes(passed=1)
    assert pcaps(pytester.path / "bt") == []  # no failure: nothing kept


def test_bad_capture_values_are_clear_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.vdens(capture="sometimes")
        def test_marked():
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*capture='sometimes' is not one of 'no', 'on-failure', 'always'*"])
    result = run(pytester, "--vdens-capture=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    pytester.makeini("[pytest]\nvdens_capture = sometimes\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*vdens_capture = 'sometimes': use no, on-failure, always*"])


XDIST_SUITE = """
import os
import pytest

@pytest.mark.parametrize("n", range(6))
def test_host(make_vdens_ns, n):
    ns = make_vdens_ns(addr="auto")
    ns.run(["ping", "-c", "1", ns.ip()], check=True)
    with open(os.path.join(os.environ["CAPTURES"], f"{n}.worker"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
    assert n % 2 == 0
"""


def test_xdist_workers_keep_captures_in_separate_places(pytester: pytest.Pytester,
                                                        tmp_path: Path) -> None:
    pytester.makepyfile(XDIST_SUITE)
    where = tmp_path / "captures"
    where.mkdir()
    os.environ["CAPTURES"] = str(where)
    try:
        result = run(pytester, "-n", "2", f"--vdens-capture-dir={where}")
    finally:
        del os.environ["CAPTURES"]
    result.assert_outcomes(passed=3, failed=3)
    workers = {int(p.stem): p.read_text() for p in where.glob("*.worker")}
    assert set(workers.values()) == {"gw0", "gw1"}, workers
    # one directory per failed test (named for its id), none for the passed ones
    assert pcaps(where) == [f"test_xdist_workers_keep_captures_in_separate_places.py_test_host_{n}_"
                            f"/ns0/vde0.pcap" for n in (1, 3, 5)]
    # without --vdens-capture-dir: each worker's own basetemp
    result = run(pytester, "-n", "2", "--vdens-capture=always")
    kept = pcaps(pytester.path / "bt")
    assert len(kept) == 6 and {p.split("/")[0] for p in kept} == {"popen-gw0", "popen-gw1"}, kept


def test_a_capture_keeps_the_last_frames_within_its_size_cap() -> None:
    """A long test's capture is a ring: the last 2 to 4 MB of frames, never more."""
    frames, payload = 8000, 1200
    with Switch() as sw, Namespace([sw.url], addr=["10.9.0.1/24"], capture=True) as a, \
            Namespace([sw.url], addr=["10.9.0.2/24"]) as b:
        live = a.captures["vde0"]
        assert os.path.exists(live)
        rx = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("10.9.0.2", 9999))
        rx.settimeout(10)
        tx = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(frames):
            tx.sendto(f"seq={i:06d}".encode().ljust(payload, b"."), ("10.9.0.2", 9999))
            if i % 64 == 63:  # pace it by what arrives: a full tap queue would drop frames
                for _ in range(64):
                    rx.recv(2048)
        tx.close()
        rx.close()
        kept = a.close(keep_captures=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                  f"vdens-ring-{os.getpid()}"))
        assert not os.path.exists(live) and not os.path.exists(live + ".old")
    try:
        assert os.stat(kept["vde0"]).st_mode & 0o777 == 0o600  # joined from two halves
        size = os.path.getsize(kept["vde0"])
        assert LIMIT // 2 <= size <= LIMIT + 2 * FLUSH_AT, size  # written in FLUSH_AT chunks
        seqs = [int(s) for s in re.findall(r"seq=(\d{6})", subprocess.run(
            ["tcpdump", "-nr", kept["vde0"], "-A", "udp"], capture_output=True, text=True,
            check=True).stdout)]
        assert seqs[-1] == frames - 1  # the newest frames are there...
        assert seqs == list(range(seqs[0], frames))  # ...after a contiguous run of older ones
        assert seqs[0] > 0  # the oldest were dropped
    finally:
        os.unlink(kept["vde0"])
        os.rmdir(os.path.dirname(kept["vde0"]))


def test_captures_of_a_closed_namespace_are_deleted_unless_kept() -> None:
    with Namespace(addr=["10.9.1.1/24"], capture=True) as ns:
        ns.run(["ping", "-c", "1", "-W", "1", "10.9.1.2"])  # nobody: an ARP request goes out
        path = ns.captures["vde0"]
        assert "who-has 10.9.1.2 tell 10.9.1.1" in tcpdump(path)
    assert not os.path.exists(path)
    with Namespace(addr="auto") as ns:
        assert ns.captures == {}
    ns = Namespace(capture=True)
    with pytest.raises(Exception, match="cannot keep the captures in '/proc/.*': .*writable"):
        ns.close(keep_captures="/proc/nope")
    assert not os.path.exists(ns.captures["vde0"])
