"""--vdens-isolate: every test in a network namespace of its own, without changing the tests."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from pytest_vdens import Namespace

pytestmark = pytest.mark.timeout(300)

PORTCLASH = Path(__file__).parent / "portclash"

HOST_NET = """
import os
HOST_NET = os.readlink("/proc/self/ns/net")
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def run_alone(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a network namespace of its own, so that nothing else on this machine
    holds the ports it binds, and it holds none of theirs."""
    start = time.monotonic()
    with Namespace(nets="no") as ns:
        proc = ns.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                      cwd=pytester.path, capture_output=True, text=True)
    return pytest.RunResult(proc.returncode, proc.stdout.splitlines(),
                            proc.stderr.splitlines(), time.monotonic() - start)


def test_unmarked_tests_each_get_their_own_loopback(pytester: pytest.Pytester) -> None:
    log = pytester.path / "nets"
    pytester.makeconftest(HOST_NET)
    pytester.makepyfile(f"""
        import os, socket, subprocess
        import pytest
        from conftest import HOST_NET

        @pytest.fixture
        def server():
            with socket.create_server(("127.0.0.1", 8080)) as s:
                yield s

        @pytest.mark.parametrize("n", range(3))
        def test_fixed_port(server, n):
            net = os.readlink("/proc/self/ns/net")
            with open({str(log)!r}, "a") as f:
                f.write(net + "\\n")
            assert net != HOST_NET
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
            with socket.create_connection(("127.0.0.1", 8080)):
                pass

        @pytest.mark.skipif(True, reason="skipped as usual")
        def test_skipped():
            pass
    """)
    result = run(pytester, "--vdens-isolate")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["vdens: *unmarked tests isolated (--vdens-isolate)*"])
    assert len(set(log.read_text().split())) == 3  # one namespace per test


def test_the_ini_key_turns_it_on_and_o_turns_it_back_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nvdens_isolate = true\n")
    pytester.makeconftest(HOST_NET)
    pytester.makepyfile("""
        import os
        from conftest import HOST_NET

        def test_where():
            print("ISOLATED", os.readlink("/proc/self/ns/net") != HOST_NET)
    """)
    run(pytester, "-s").stdout.fnmatch_lines(["*ISOLATED True*"])
    run(pytester, "-s", "-o", "vdens_isolate=false").stdout.fnmatch_lines(["*ISOLATED False*"])


def test_marked_tests_keep_their_own_arguments(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import subprocess
        import pytest

        def links():
            out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            return [line.split(":")[1].strip() for line in out.splitlines()]

        @pytest.mark.vdens(iface="eth")
        def test_own_interface(vdens_ns):
            assert links() == ["lo", "eth0"]

        @pytest.mark.vdens(nets="-", resolver="192.0.2.1")
        def test_own_resolver():
            assert open("/etc/resolv.conf").read() == "nameserver 192.0.2.1\\n"

        def test_isolated():
            assert links() == ["lo"]
    """)
    run(pytester, "--vdens-isolate").assert_outcomes(passed=3)


def test_isolate_false_opts_a_test_or_a_module_out(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOST_NET)
    pytester.makepyfile(test_a="""
        import os
        import pytest
        from conftest import HOST_NET

        @pytest.mark.vdens(isolate=False)
        def test_out():
            assert os.readlink("/proc/self/ns/net") == HOST_NET

        @pytest.mark.vdens(isolate=True)
        def test_in():
            assert os.readlink("/proc/self/ns/net") != HOST_NET

        def test_isolated():
            assert os.readlink("/proc/self/ns/net") != HOST_NET
    """, test_b="""
        import os
        import pytest
        from conftest import HOST_NET

        pytestmark = pytest.mark.vdens(isolate=False)

        def test_whole_module_out():
            assert os.readlink("/proc/self/ns/net") == HOST_NET
    """)
    run(pytester, "--vdens-isolate").assert_outcomes(passed=4)
    # without the flag, isolate=False still means outside
    run(pytester, "test_a.py::test_out", "test_a.py::test_in").assert_outcomes(passed=2)


@pytest.mark.parametrize("args, words", [
    ("isolate='no'", ["isolate='no'", "True or False"]),
    ("nets='-', isolate=False", ["isolate=False runs the test outside", "nets would be ignored"]),
])
def test_bad_isolate_arguments_fail_only_that_test(pytester: pytest.Pytester, args: str,
                                                   words: list[str]) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.vdens({args})
        def test_bad():
            pass

        def test_good():
            pass
    """)
    result = run(pytester, "--vdens-isolate")
    result.assert_outcomes(passed=1, errors=1)
    for word in words:
        assert word in result.stdout.str()


def test_tests_driving_namespaces_from_outside_stay_outside(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOST_NET)
    pytester.makepyfile("""
        import os
        import pytest
        from conftest import HOST_NET

        def test_two_hosts(make_vdens_ns):
            assert os.readlink("/proc/self/ns/net") == HOST_NET
            a, b = make_vdens_ns(), make_vdens_ns()
            for ns, cidr in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
                ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
                ns.run(["ip", "link", "set", "vde0", "up"], check=True)
            # as root too: not nested in an isolated namespace, where ping cannot start
            assert a.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0

        def test_session_namespace(vdens_session_ns):
            assert os.readlink("/proc/self/ns/net") == HOST_NET
            vdens_session_ns.run(["true"], check=True)

        def test_factory_refuses_isolate(make_vdens_ns):
            with pytest.raises(ValueError, match="isolate is a marker argument"):
                make_vdens_ns(isolate=False)
    """)
    run(pytester, "--vdens-isolate").assert_outcomes(passed=3)


SESSION_SERVER = """
import socket, threading
import pytest

def note(what):
    with open("log", "a") as f:
        f.write(what + "\\n")

@pytest.fixture(scope="session")
def server():
    # set up once, in pytest's own process: in the host's network
    note("server up")
    s = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: s.accept()[0].close(), daemon=True).start()
    yield s.getsockname()[1]
    s.close()
"""


def test_a_session_server_is_shared_but_out_of_isolated_tests_reach(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SESSION_SERVER)
    pytester.makepyfile("""
        import socket
        import pytest

        @pytest.mark.parametrize("n", range(2))
        def test_isolated(server, n):
            with pytest.raises(ConnectionRefusedError):  # its 127.0.0.1 is its own
                socket.create_connection(("127.0.0.1", server))

        @pytest.mark.vdens(isolate=False)
        def test_outside(server):
            socket.create_connection(("127.0.0.1", server)).close()
    """)
    run(pytester, "--vdens-isolate").assert_outcomes(passed=3)
    assert (pytester.path / "log").read_text() == "server up\n"


def test_a_server_in_vdens_session_ns_serves_session_scoped_tests(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import socket, sys
        import pytest

        SERVER = '''
        import socket
        server = socket.create_server(("127.0.0.1", 8080))
        print("ready", flush=True)
        while True:
            server.accept()[0].close()
        '''

        @pytest.fixture(scope="session")
        def server(vdens_session_ns):
            # started inside this worker's session namespace, on the port it wants
            proc = vdens_session_ns.popen([sys.executable, "-c", SERVER], stdout=-1, text=True)
            assert proc.stdout.readline() == "ready\\n"
            yield 8080
            proc.kill()
            proc.wait()
    """)
    pytester.makepyfile("""
        import socket
        import pytest

        @pytest.mark.vdens(scope="session")
        @pytest.mark.parametrize("n", range(6))
        def test_reaches_it(server, n):
            socket.create_connection(("127.0.0.1", server)).close()
    """)
    # two workers: two session namespaces, each with its own port 8080
    run(pytester, "--vdens-isolate", "-n", "2").assert_outcomes(passed=6)


def test_isolated_tests_are_not_repeated_for_each_switch(pytester: pytest.Pytester,
                                                        vde_switch: str) -> None:
    pytester.makepyfile("""
        import pytest

        def test_isolated():
            pass

        @pytest.mark.vdens
        def test_marked():
            pass
    """)
    result = run(pytester, "--vdens-isolate", "-v",
                 "--vdens-switch", vde_switch, "--vdens-switch", vde_switch)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_isolated PASSED*"])


def test_isolated_tests_share_one_tmp_path_base(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # no --basetemp, as users run it: pytest numbers a base directory per session
    root = pytester.path / "temproot"
    root.mkdir()
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(root))
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_uses_tmp_path(tmp_path, n):
            (tmp_path / "f").write_text("x")
    """)
    result = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          "--vdens-isolate")
    result.assert_outcomes(passed=3)
    bases = [p.name for p in root.glob("pytest-of-*/pytest-*") if not p.is_symlink()]
    assert bases == ["pytest-0"]
    assert len(list(root.glob("pytest-of-*/pytest-0/test_uses_tmp_path_?_0/f"))) == 3


# -- a real suite with hard-coded ports: tests/portclash --------------------------------


@pytest.fixture
def portclash(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(PORTCLASH, pytester.path, dirs_exist_ok=True)
    return pytester


def test_portclash_passes_run_serially(portclash: pytest.Pytester) -> None:
    run_alone(portclash, "-p", "no:xdist").assert_outcomes(passed=9)


def test_portclash_collides_under_xdist(portclash: pytest.Pytester) -> None:
    result = run_alone(portclash, "-n", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Address already in use" in result.stdout.str()


RUNS = 3  # 20 by hand: see docs/howto/port-collisions.md


def test_portclash_passes_under_xdist_with_vdens_isolate(portclash: pytest.Pytester) -> None:
    for _ in range(RUNS):
        result = portclash.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                                "--vdens-isolate")
        result.assert_outcomes(passed=9)
