"""The pytest plugin as users meet it: marker, fixtures, options, xdist, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.timeout(180)

HOST_NET = """
import os
HOST_NET = os.readlink("/proc/self/ns/net")
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def test_a_marked_test_runs_inside_and_an_unmarked_one_outside(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOST_NET)
    pytester.makepyfile("""
        import os, subprocess
        import pytest
        from conftest import HOST_NET

        @pytest.mark.vdens
        def test_inside():
            assert os.readlink("/proc/self/ns/net") != HOST_NET
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            assert [l.split(":")[1].strip() for l in links.splitlines()] == ["lo", "vde0"]

        def test_outside():
            assert os.readlink("/proc/self/ns/net") == HOST_NET
    """)
    run(pytester).assert_outcomes(passed=2)


def test_a_marked_test_binds_port_80_and_talks_to_itself(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import socket
        import pytest

        @pytest.fixture
        def server():
            # function-scoped: set up inside the test's namespace
            with socket.create_server(("127.0.0.1", 80)) as s:
                yield s

        @pytest.mark.vdens
        def test_port_80(server):
            with socket.create_connection(("127.0.0.1", 80)) as c:
                conn, _ = server.accept()
                c.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    """)
    run(pytester).assert_outcomes(passed=1)


def test_wider_fixtures_are_set_up_once_outside_and_shared(pytester: pytest.Pytester) -> None:
    log = pytester.path / "log"
    pytester.makeconftest(HOST_NET + textwrap.dedent(f"""
        import pytest

        def note(what):
            with open({str(log)!r}, "a") as f:
                f.write(what + "\\n")

        @pytest.fixture(scope="session")
        def shared():
            note("session setup " + ("outside" if os.readlink("/proc/self/ns/net") == HOST_NET
                                     else "inside"))
            yield {{"pid": os.getpid()}}
            note("session teardown")

        @pytest.fixture(scope="module")
        def per_module():
            note("module setup")
            yield
            note("module teardown")
    """))
    pytester.makepyfile(test_a="""
        import os
        import pytest

        @pytest.mark.vdens
        def test_one(shared, per_module):
            assert shared["pid"] != os.getpid()  # we are a forked child

        @pytest.mark.vdens
        def test_two(shared, per_module):
            pass

        def test_three(shared, per_module):
            assert shared["pid"] == os.getpid()
    """, test_b="""
        import pytest

        @pytest.mark.vdens
        def test_four(shared, per_module):
            pass
    """)
    run(pytester).assert_outcomes(passed=4)
    assert log.read_text().splitlines() == [
        "session setup outside", "module setup", "module teardown",
        "module setup", "module teardown", "session teardown"]


def test_the_three_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os, socket, sys, time
        import pytest

        def up(ns, cidr):
            ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
            ns.run(["ip", "link", "set", "vde0", "up"], check=True)

        def test_vdens_ns_joins_the_test_switch(vdens_ns, vdens_switch):
            assert vdens_ns.nets == (vdens_switch,)
            assert os.path.exists(vdens_switch[len("vde://"):] + "/ctl")

        @pytest.mark.vdens(iface="eth")
        def test_vdens_ns_is_the_namespace_a_marked_test_runs_in(vdens_ns):
            assert vdens_ns.interfaces == ("eth0",)
            net = vdens_ns.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True)
            assert net.stdout.strip() == os.readlink("/proc/self/ns/net")

        def test_two_hosts_exchange_http(make_vdens_ns):
            web, client = make_vdens_ns(), make_vdens_ns()
            up(web, "10.0.0.80/24")
            up(client, "10.0.0.2/24")
            web.popen([sys.executable, "-m", "http.server", "80", "--bind", "10.0.0.80"],
                      cwd="/", stdout=-3, stderr=-3)

            def get():
                for _ in range(200):
                    try:
                        with socket.create_connection(("10.0.0.80", 80), timeout=5) as s:
                            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                            return s.makefile("rb").read().decode()
                    except ConnectionRefusedError:
                        time.sleep(0.05)

            assert client.call(get).startswith("HTTP/1.0 200")

        seen = []

        @pytest.mark.parametrize("n", [1, 2])
        def test_the_session_namespace_is_shared(vdens_session_ns, n):
            seen.append(vdens_session_ns.init_pid)
            assert len(set(seen)) == 1
    """)
    run(pytester).assert_outcomes(passed=5)


def test_each_test_gets_its_own_embedded_switch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os
        seen = []

        def test_a(vdens_switch):
            seen.append(vdens_switch)

        def test_b(vdens_switch):
            seen.append(vdens_switch)
            assert seen[0] != seen[1]
            assert not os.path.exists(seen[0][len("vde://"):])  # gone with test_a
    """)
    run(pytester).assert_outcomes(passed=2)


@pytest.fixture
def second_switch(tmp_path: os.PathLike[str]) -> str:
    sw = os.path.join(tmp_path, "plugsw")
    proc = subprocess.Popen(["vde_plug", f"switch://{sw}", "null://"])
    assert wait_until(lambda: os.path.exists(os.path.join(sw, "ctl")))
    yield f"vde://{sw}"  # type: ignore[misc]
    proc.terminate()
    proc.wait()


def test_vdens_switch_options_parametrize_over_real_switches(
        pytester: pytest.Pytester, vde_switch: str, second_switch: str) -> None:
    pytester.makepyfile("""
        import subprocess
        import pytest

        @pytest.mark.vdens
        def test_marked(vdens_switch, vdens_ns):
            assert vdens_ns.nets == (vdens_switch,)
            print("URL", vdens_switch)

        def test_factory(make_vdens_ns, vdens_switch):
            assert make_vdens_ns().nets == (vdens_switch,)

        def test_plain():
            pass
    """)
    result = run(pytester, "-v", "--vdens-switch", vde_switch, "--vdens-switch", second_switch)
    result.assert_outcomes(passed=5)
    tail1 = vde_switch.rsplit("/", 1)[1]
    tail2 = second_switch.rsplit("/", 1)[1]
    result.stdout.fnmatch_lines([
        f"*test_marked?vde-{tail1}? PASSED*", f"*test_marked?vde-{tail2}? PASSED*",
        f"*test_factory?vde-{tail1}? PASSED*", f"*test_factory?vde-{tail2}? PASSED*",
        "*test_plain PASSED*"])
    result.stdout.fnmatch_lines([f"URL {vde_switch}", f"URL {second_switch}"])


def test_one_vdens_switch_is_every_default_network(pytester: pytest.Pytester, vde_switch: str) -> None:
    pytester.makeini(f"[pytest]\nvdens_switch = {vde_switch}\n")
    pytester.makepyfile(f"""
        def test_it(vdens_ns, vdens_switch):
            assert vdens_switch == {vde_switch!r}
            assert vdens_ns.nets == (vdens_switch,)
    """)
    run(pytester, "-v").assert_outcomes(passed=1)


def test_resolver_injected_by_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.vdens(nets="-", resolver=["192.0.2.1", "2001:db8::1"])
        def test_resolv_conf():
            with open("/etc/resolv.conf") as f:
                assert f.read() == "nameserver 192.0.2.1\\nnameserver 2001:db8::1\\n"
    """)
    run(pytester).assert_outcomes(passed=1)


def test_caps_and_session_scope_from_the_marker(pytester: pytest.Pytester) -> None:
    log = pytester.path / "nets"
    pytester.makepyfile(f"""
        import os, socket
        import pytest

        @pytest.mark.vdens(caps=[])
        def test_no_caps():
            with pytest.raises(PermissionError):
                socket.socket().bind(("127.0.0.1", 80))

        def note(scope):
            with open({str(log)!r}, "a") as f:
                f.write(scope + " " + os.readlink("/proc/self/ns/net") + "\\n")

        @pytest.mark.vdens(scope="session")
        @pytest.mark.parametrize("n", range(3))
        def test_shared(n):
            note("session")

        @pytest.mark.vdens
        @pytest.mark.parametrize("n", range(2))
        def test_fresh(n):
            note("function")
    """)
    run(pytester).assert_outcomes(passed=6)
    lines = log.read_text().split("\n")[:-1]
    shared = {line for line in lines if line.startswith("session")}
    fresh = {line for line in lines if line.startswith("function")}
    assert len(lines) == 5 and len(shared) == 1 and len(fresh) == 2


def test_a_socket_a_session_test_left_open_does_not_hold_its_port(pytester: pytest.Pytester) -> None:
    # pytest goes on once a marked test's process says it is done, before it has exited
    pytester.makepyfile("""
        import socket
        import pytest

        kept = []

        @pytest.mark.vdens(scope="session")
        @pytest.mark.parametrize("n", range(6))
        def test_listen(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 8080))
            s.listen()
            # never closed, and the process takes a while to unmap its memory at exit
            kept.extend([s, b"x" * (256 << 20)])
    """)
    run(pytester).assert_outcomes(passed=6)


@pytest.mark.parametrize("args, words", [
    ("bogus=1", ["bogus", "allowed: nets, iface"]),
    ("nets=3", ["nets=3", "not a list"]),
    ("caps=['net_admin', 'fly']", ["'fly'", "capabilities(7)"]),
    ("resolver='1.2.3.4,nope'", ["'nope'", "IPv4 or IPv6"]),
    ("scope='module'", ["scope='module'", "'function', 'session'"]),
    ("'vde:///a', 'vde:///b'", ["at most one positional"]),
    ("nets=['foo://x']", ["foo://x", "libvdeplug_foo.so"]),
])
def test_bad_marker_arguments_fail_only_that_test(pytester: pytest.Pytester, args: str,
                                                  words: list[str]) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.vdens({args})
        def test_bad():
            pass

        @pytest.mark.vdens
        def test_good():
            pass
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    for word in words:
        assert word in result.stdout.str()


def test_a_crash_inside_is_a_clear_failure_and_the_session_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import ctypes, os, signal
        import pytest

        @pytest.mark.vdens
        def test_exit():
            os._exit(3)

        @pytest.mark.vdens
        def test_segv():
            ctypes.string_at(0)

        @pytest.fixture
        def dies():
            os.kill(os.getpid(), signal.SIGKILL)

        @pytest.mark.vdens
        def test_dies_in_setup(dies):
            pass

        @pytest.mark.vdens
        def test_after():
            pass
    """)
    result = run(pytester, "-p", "no:faulthandler")
    result.assert_outcomes(passed=1, failed=2, errors=1)
    result.stdout.fnmatch_lines([  # errors come before failures
        "*test process killed by SIGKILL inside its namespace, during setup*",
        "*test process exited with status 3 inside its namespace, during call*",
        "*test process killed by SIGSEGV inside its namespace, during call*",
    ])


def test_skips_xfails_output_and_warnings_come_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import warnings
        import pytest

        @pytest.mark.vdens
        def test_skip():
            pytest.skip("skipped inside")

        @pytest.mark.vdens
        @pytest.mark.xfail(reason="expected")
        def test_xfail():
            assert False

        @pytest.mark.vdens
        def test_output():
            print("hello from inside")
            warnings.warn("warned inside")
            assert False
    """)
    result = run(pytester)
    result.assert_outcomes(skipped=1, xfailed=1, failed=1, warnings=1)
    result.stdout.fnmatch_lines(["*hello from inside*", "*warned inside*", "*skipped inside*"])


def test_strict_markers_and_marker_help(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.vdens(nets="-")
        def test_it():
            pass
    """)
    run(pytester, "--strict-markers").assert_outcomes(passed=1)
    help_ = pytester.runpytest_subprocess("--markers")
    help_.stdout.fnmatch_lines(["@pytest.mark.vdens(nets=None, iface=*run this test INSIDE*"])


XDIST_SUITE = """
    import os, socket
    import pytest

    @pytest.mark.vdens
    @pytest.mark.parametrize("n", range(6))
    def test_port_80(n):
        with socket.create_server(("0.0.0.0", 80)):
            pass

    @pytest.mark.parametrize("n", range(4))
    def test_two_hosts(make_vdens_ns, n):
        a, b = make_vdens_ns(), make_vdens_ns()
        for ns, ip in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
            ns.run(["ip", "addr", "add", ip, "dev", "vde0"], check=True)
            ns.run(["ip", "link", "set", "vde0", "up"], check=True)
        assert a.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0

    @pytest.mark.vdens
    def test_crash():
        os._exit(1)
"""


def test_xdist_workers_are_independent(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_SUITE)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(["*test process exited with status 1*"])


def test_unavailable_namespaces_can_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.vdens
        def test_marked():
            pass

        def test_fixture(vdens_ns):
            pass

        def test_plain():
            pass
    """)
    # a machine without /dev/net/tun, made real in a private mount namespace
    cmd = ("mount -t tmpfs none /dev/net && exec \"$0\" -m pytest -p no:cacheprovider -rs "
           "--vdens-unavailable=skip")
    result = pytester.run("unshare", "-Urm", "sh", "-c", cmd, sys.executable)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*pytest-vdens: cannot open /dev/net/tun*modprobe tun*"])


def test_iface_and_resolver_options_set_the_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        def test_fixture(vdens_ns):
            assert vdens_ns.interfaces == ("eth0",)
            out = vdens_ns.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True)
            assert out.stdout == "nameserver 192.0.2.9\\n"

        @pytest.mark.vdens
        def test_marked(vdens_ns):
            assert vdens_ns.interfaces == ("eth0",)
            assert open("/etc/resolv.conf").read() == "nameserver 192.0.2.9\\n"

        @pytest.mark.vdens(iface="net", resolver="192.0.2.10")
        def test_marker_wins():
            assert open("/etc/resolv.conf").read() == "nameserver 192.0.2.10\\n"
    """)
    run(pytester, "--vdens-iface", "eth", "--vdens-resolver", "192.0.2.9").assert_outcomes(passed=3)


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester, "--vdens-resolver", "not-an-address")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-vdens*'not-an-address'*IPv4 or IPv6*"])


def test_addresses_macs_and_networks_from_the_fixtures(pytester: pytest.Pytester) -> None:
    log = pytester.path / "macs"
    pytester.makepyfile(f"""
        import pytest

        def test_stable_macs(make_vdens_ns):
            a, b = make_vdens_ns(addr="auto"), make_vdens_ns(addr="auto")
            assert a.run(["ping", "-c", "1", "-W", "5", b.ip()]).returncode == 0
            for ns in (a, b):
                link = ns.run(["ip", "-o", "link", "show", "vde0"], capture_output=True, text=True)
                with open({str(log)!r}, "a") as f:
                    f.write(link.stdout.split("link/ether ")[1].split()[0] + "\\n")

        def test_networks_and_static_addresses(make_vdens_ns, make_vdens_net):
            lan = make_vdens_net()
            a = make_vdens_ns(nets=[lan], addr="10.50.0.1/24", mac="02:00:00:00:50:01")
            b = make_vdens_ns([lan], addr="10.50.0.2/24")
            assert a.nets == (lan.url,) and a.ip() == "10.50.0.1"
            assert b.run(["ping", "-c", "1", "-W", "5", "10.50.0.1"]).returncode == 0
            with pytest.raises(Exception, match="already used"):
                make_vdens_ns(nets=[lan], addr="10.50.0.1/24")

        @pytest.mark.vdens(addr="auto")
        def test_marked_with_auto(vdens_ns):
            assert vdens_ns.addresses["vde0"][0].startswith(vdens_ns.ip() + "/")

        @pytest.mark.vdens(addr="10.0.0.300/24")
        def test_bad_addr():
            pass
    """)
    for _ in range(2):
        result = run(pytester)
        result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*'10.0.0.300/24' is not a CIDR*"])
    first, second = log.read_text().split()[:2], log.read_text().split()[2:]
    assert first == second and first[0] != first[1]  # the same test, the same MACs
