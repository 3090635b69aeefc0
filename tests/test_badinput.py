"""Bad input: random and odd arguments to Namespace(), the marker, the factory and pyvdens.

Every input either works or gives a pytest-vdens error; none hangs, crashes
the worker or the helper, or leaves anything behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_vdens import (
    ArgumentError,
    InterfaceNameError,
    Namespace,
    NetworkError,
    VdensError,
    capabilities,
)
from pytest_vdens.client import helper
from pytest_vdens.libvdeplug import plugin_dirs

from .conftest import configure, settled, wait_until

pytestmark = pytest.mark.timeout(300)

EXAMPLES = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- strategies ----------------------------------------------------------------------------

# Plugins that act on the world (run commands, create sockets where told, send
# to hosts) are left out of the random URLs: they do what the URL says.
_INSTALLED = {p.name[len("libvdeplug_"):-len(".so")] for d in plugin_dirs() if d.is_dir()
              for p in d.glob("libvdeplug_*.so")}
_ACTING = _INSTALLED - {"vde", "null"}

# no NUL in random paths: a NUL is tested on its own below
text = st.text(st.characters(exclude_characters="\0"), max_size=30)

ODD_URLS = ["", " ", "\t", "-", "no", " no ", "vde://", "vde:///", "vde:///no/such/switch",
            "/no/such", "null://", "slirp://", "foo://bar", "://", "vde://" + "x" * 200,
            "/" + "d" * 200, "vde://\0", "a\0b", "\ud800", "ünïcödé", "a b", "vde:///tmp/../etc",
            "no such plugin://x", "vde://" + "é" * 60]


def _harmless(url: str) -> bool:
    scheme = url.split("://", 1)[0] if "://" in url else "vde"
    return scheme not in _ACTING


urls = st.one_of(st.sampled_from(ODD_URLS), text.filter(_harmless),
                 st.builds(str.__add__, st.sampled_from(["vde://", "null://", "vde:///tmp/"]), text))
nets = st.one_of(st.none(), urls, st.lists(st.one_of(st.none(), urls), max_size=3),
                 st.integers(), st.binary(max_size=4), st.lists(st.integers(), max_size=2))
addresses = st.one_of(st.ip_addresses().map(str), text, st.sampled_from(["", ",", "1.2.3.4,",
                      "1.2.3.4\nnameserver 6.6.6.6", "::1%lo", "999.1.1.1", "1.2.3.4 5.6.7.8"]))
ifaces = st.one_of(text, st.sampled_from(["", "vde", "x" * 14, "x" * 15, "à", "a/b", "a:b",
                                          "%d", ".", "..", "\ud800", "\n", "é" * 7]))
cidrs = st.one_of(st.ip_addresses().map(str),
                  st.builds("{}/{}".format, st.ip_addresses(), st.integers(-1, 130)), text)
addrs = st.one_of(st.just("auto"), cidrs, st.lists(st.one_of(cidrs, st.lists(cidrs, max_size=2)),
                                                   max_size=3))
macs = st.one_of(st.sampled_from(["02:00:00:00:00:01", "01:00:5e:00:00:01", "ff" * 6, "0200.0000.0001",
                                  "02-00-00-00-00-02", ""]), text,
                 st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")))
cap_names = st.one_of(st.sampled_from(capabilities.names()), text,
                      st.sampled_from(["CAP_NET_ADMIN", " net_raw ", "all", "cap_", ""]))


def engine_kwargs(resolvconf: str) -> st.SearchStrategy[dict[str, Any]]:
    """Namespace() keywords, bad ones included (but not those of known engine bugs)."""
    return st.fixed_dictionaries({}, optional={
        "nets": nets,
        "iface": st.one_of(ifaces, st.integers(), st.none()),
        "resolver": st.one_of(st.none(), addresses, st.lists(st.one_of(addresses, st.integers()),
                                                              max_size=3)),
        "resolvconf": st.one_of(st.none(), text, st.just(resolvconf), st.just("/")),
        "sysadm": st.booleans(),
        "caps": st.one_of(st.none(), st.lists(cap_names, max_size=3),
                          cap_names, st.lists(st.integers(), max_size=1)),
        "addr": st.one_of(st.none(), addrs, st.integers()),
        "mac": st.one_of(st.none(), macs, st.lists(macs, max_size=3), st.integers()),
    })


def marker_kwargs(resolvconf: str) -> st.SearchStrategy[dict[str, Any]]:
    """What a test author may write in @pytest.mark.vdens(...) or make_vdens_ns(...)."""
    anything = st.one_of(st.none(), st.integers(), st.booleans(), text, st.lists(text, max_size=2))
    return st.fixed_dictionaries({}, optional={
        "nets": nets,
        "iface": st.one_of(ifaces, anything),
        "resolver": st.one_of(addresses, st.lists(addresses, max_size=3), anything),
        "resolvconf": st.one_of(st.just(resolvconf), anything),
        "sysadm": st.one_of(st.booleans(), anything),
        "caps": st.one_of(st.lists(cap_names, max_size=3), cap_names, anything),
        "scope": st.one_of(st.sampled_from(["function", "session"]), anything),
        "addr": st.one_of(addrs, anything),
        "mac": st.one_of(macs, st.lists(macs, max_size=3), anything),
        "bogus": anything,
    })


@pytest.fixture(scope="module")
def resolvconf(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("conf") / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\n")
    return str(path)


def _fds() -> tuple[int, int, int, int]:
    """The helper's pid, its fds and children; our fds."""
    pid = helper().pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = len(f.read().split())
    return pid, len(os.listdir(f"/proc/{pid}/fd")), children, len(os.listdir("/proc/self/fd"))


def _flush_pool() -> None:
    """Leave the helper with its default switch, and no namespace made ahead (its pool)."""
    helper().request("default_switch")
    helper().request("drain")


@pytest.fixture
def helper_unharmed() -> Iterator[None]:
    """The same helper serves before and after, with as many fds and children."""
    _flush_pool()
    before = settled(_fds)
    yield
    _flush_pool()
    assert settled(_fds) == before
    with Namespace() as ns:
        assert ns.run(["true"]).returncode == 0


# -- Namespace() ---------------------------------------------------------------------------


@pytest.mark.usefixtures("helper_unharmed")
def test_namespace_takes_any_arguments_and_works_or_says_why(resolvconf: str) -> None:
    outcomes: dict[str, int] = {}

    @EXAMPLES
    @given(kwargs=engine_kwargs(resolvconf))
    @example(kwargs={}).via("works")
    @example(kwargs={"nets": 3}).via("ArgumentError")
    @example(kwargs={"nets": ["/no/such"]}).via("NetworkError")
    def check(kwargs: dict[str, Any]) -> None:
        pid = helper().pid
        try:
            with Namespace(**kwargs) as ns:
                assert ns.run(["true"]).returncode == 0
                outcome = "works"
        except VdensError as e:
            outcome = type(e).__name__
            assert str(e)
        assert helper().pid == pid
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    check()
    assert "works" in outcomes and len(outcomes) > 2, outcomes


# -- the marker and the factory ------------------------------------------------------------


def test_the_marker_and_the_factory_take_any_arguments(pytester: pytest.Pytester, no_leaks: str,
                                                       resolvconf: str) -> None:
    runs = []

    @settings(max_examples=3, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])
    @given(st.lists(st.tuples(st.lists(urls, max_size=2), marker_kwargs(resolvconf)),
                    min_size=25, max_size=25))
    def check(cases: list[tuple[list[str], dict[str, Any]]]) -> None:
        source = ["import pytest", "from pytest_vdens import VdensError", ""]
        for n, (args, kwargs) in enumerate(cases):
            source += [f"@pytest.mark.vdens(*{args!r}, **{kwargs!r})",
                       f"def test_marker_{n}():", "    pass", "",
                       f"def test_factory_{n}(make_vdens_ns):",
                       "    try:",
                       f"        make_vdens_ns(*{args!r}, **{kwargs!r}).run(['true'], check=True)",
                       "    except VdensError as e:",
                       "        print('refused:', e)", ""]
        pytester.makepyfile(test_fuzz="\n".join(source))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "-q")
        outcomes = result.parseoutcomes()
        assert result.ret in (0, 1), result.stdout.str()
        assert outcomes.get("failed", 0) == 0, result.stdout.str()
        assert outcomes.get("passed", 0) + outcomes.get("errors", 0) == 2 * len(cases)
        errors = [line for line in result.stdout.lines if line.startswith("ERROR ")]
        assert all("pytest-vdens: " in line for line in errors), errors
        runs.append(outcomes)

    check()
    assert any(r.get("errors") for r in runs) and any(r.get("passed", 0) > 25 for r in runs)


# -- pyvdens ---------------------------------------------------------------------------------

cli_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=30)
cli_nets = st.one_of(st.sampled_from([u for u in ODD_URLS if "\0" not in u and "\ud800" not in u]),
                     cli_text.filter(lambda u: _harmless(u) and not u.startswith("=")))


@st.composite
def cli_args(draw: st.DrawFn) -> list[str]:
    """A pyvdens command line; the command is always `true`."""
    opts: list[str] = []
    for flag in draw(st.lists(st.sampled_from(["-i", "--iface", "-R", "--resolvaddr", "-r",
                                                 "--resolvconf", "-s", "-c", "-u", "--drop-caps",
                                                 "--bogus", "-x"]), max_size=4)):
        opts.append(flag)
        if flag in ("-i", "--iface"):
            opts.append(draw(ifaces.filter(lambda s: "\ud800" not in s)))
        elif flag in ("-R", "--resolvaddr"):
            opts.append(draw(addresses.filter(lambda s: "\0" not in s)))
        elif flag in ("-r", "--resolvconf"):
            opts.append(draw(st.one_of(cli_text, st.just("/etc/hostname"), st.just("/"))))
    networks = draw(st.lists(cli_nets, min_size=1, max_size=3))
    if len(networks) > 1 or draw(st.booleans()):
        return ["-m", *opts, *networks, "--", "true"]
    return [*opts, networks[0], "true"]


def test_pyvdens_takes_any_command_line_and_works_or_says_why(no_leaks: str) -> None:
    seen: dict[int, int] = {}

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cli_args())
    @example(["-", "true"]).via("0")
    @example(["/no/such", "true"]).via("1")
    @example(["--bogus", "-", "true"]).via("2")
    def check(argv: list[str]) -> None:
        out = subprocess.run([sys.executable, "-m", "pytest_vdens", *argv], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode in (0, 1, 2), (argv, out)
        if out.returncode:
            assert out.stderr.startswith("pyvdens: ") and out.stderr.count("\n") == 1, (argv, out)
        seen[out.returncode] = seen.get(out.returncode, 0) + 1

    check()
    assert set(seen) == {0, 1, 2}, seen


# -- URL edge cases --------------------------------------------------------------------------


@pytest.fixture
def switch_at() -> Iterator[Any]:
    """Starts vde_plug switches at paths of our choosing (relative to a short directory)."""
    base = Path(tempfile.mkdtemp(prefix="pytest-switches-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> str:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(["vde_plug", f"switch://{path}", "null://"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def listening() -> bool:
            with socket.socket(socket.AF_UNIX) as s:
                return s.connect_ex(str(path / "ctl")) == 0

        assert wait_until(listening), f"no switch at {path}"
        return str(path)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait()
    shutil.rmtree(base, ignore_errors=True)


def pings(a: Namespace, b: Namespace) -> bool:
    configure(a, "10.7.0.1/24")
    configure(b, "10.7.0.2/24")
    return a.run(["ping", "-c", "1", "-W", "5", "10.7.0.2"], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", ["with space/sw", "ünïcödé/sw", "tab\there/sw"])
def test_switch_paths_with_spaces_and_unicode_work(switch_at: Any, name: str) -> None:
    path = switch_at(name)
    with Namespace([path]) as a, Namespace([f"vde://{path}"]) as b:
        assert a.nets == (path,)
        assert pings(a, b)


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_url_means_no_interface(blank: str) -> None:
    with Namespace([blank]) as ns:
        assert ns.interfaces == ()


@pytest.mark.usefixtures("helper_unharmed")
def test_a_path_longer_than_a_socket_address_is_refused_by_name(tmp_path: Path) -> None:
    # sun_path holds 108 bytes: the path must not be cut short to some other socket
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    for url in (str(deep), f"vde://{deep}", f"vde://{deep}/no/such"):
        with pytest.raises(NetworkError) as info:
            Namespace([url])
        assert repr(url) in str(info.value)
    assert os.listdir(deep) == []


@pytest.mark.usefixtures("helper_unharmed")
def test_cmd_urls_stream_the_network_through_a_command(switch_at: Any) -> None:
    path = switch_at("cmd/sw")
    with Namespace([path]) as a, Namespace([f"cmd://vde_plug vde://{path}"]) as b:
        assert b.nets == (f"cmd://vde_plug vde://{path}",)
        assert pings(a, b)


@pytest.mark.usefixtures("helper_unharmed")
def test_a_cmd_url_whose_command_fails_is_a_dead_network() -> None:
    with Namespace(["cmd:///no/such/command"]) as ns:
        assert wait_until(lambda: ns.errors(), 5)
        assert "cmd:///no/such/command" in ns.errors()[0]


def test_closing_a_cmd_url_does_not_wait_for_its_command() -> None:
    # libvdeplug's cmd:// close waits for the command without asking it to end
    script = textwrap.dedent("""
        import time
        from pytest_vdens import Namespace
        ns = Namespace(["cmd://sleep 4"])
        start = time.monotonic()
        ns.close()
        print(round(time.monotonic() - start, 1))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert float(out.stdout) < 2, out.stdout + out.stderr


@pytest.mark.usefixtures("helper_unharmed")
def test_a_regular_file_names_the_network_in_its_first_line(switch_at: Any, tmp_path: Path) -> None:
    path = switch_at("file/sw")
    link = tmp_path / "net"
    link.write_text(f"vde://{path}\nignored\n")
    with Namespace([path]) as a, Namespace([str(link)]) as b:
        assert pings(a, b)


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("content", [b"", b"\n", b"garbage\n", b"\0\n", b"\0" * 5000,
                                     b"x" * 5000, b"\xff\xfe\n", b"vde:///no/such/switch\n",
                                     b"SELF\n"])
def test_a_regular_file_with_a_bad_first_line_is_refused_by_name(tmp_path: Path,
                                                                 content: bytes) -> None:
    file = tmp_path / "net"
    file.write_bytes(content.replace(b"SELF", str(file).encode()))
    with pytest.raises(NetworkError) as info:
        Namespace([str(file)])
    assert str(file) in str(info.value)


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("url", ["vde:///tmp/a\0b", "\0"])
def test_a_nul_in_a_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(NetworkError, match="NUL"):
        Namespace([url])


# -- values the engine refuses by name, and the helper survives ----------------------------


@pytest.mark.usefixtures("helper_unharmed")
def test_a_huge_url_is_refused_and_the_helper_goes_on() -> None:
    # over the 64 KiB of one message to the helper
    with pytest.raises(ArgumentError, match="too large"):
        Namespace(["vde:///" + "a" * 70000])


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("kwargs", [{"caps": 5}, {"resolver": 5}, {"resolvconf": 5},
                                    {"caps": [None]}, {"resolver": [1]}, {"iface": None}])
def test_a_value_of_the_wrong_type_is_an_argument_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ArgumentError):
        Namespace("-", **kwargs)


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("prefix", ["à", "a\xa0", "tab\t", "new\nline", "a/b", "a:b"])
def test_a_prefix_the_kernel_refuses_is_an_interface_name_error(prefix: str) -> None:
    # the kernel's whitespace includes byte 0xa0, as in the UTF-8 of "à"
    with pytest.raises(InterfaceNameError, match="interface prefix"):
        Namespace(iface=prefix)


def test_an_error_quoting_a_long_url_reaches_the_caller_and_the_helper_goes_on() -> None:
    pid = helper().pid
    with Namespace() as ns:
        with pytest.raises(NetworkError):
            Namespace(["vde:///tmp/" + "b/" * 10000])
        assert helper().pid == pid and ns.run(["true"]).returncode == 0


def test_a_mac_the_kernel_refuses_is_an_argument_error_and_leaves_nothing() -> None:
    _flush_pool()
    before = settled(_fds)
    with pytest.raises(ArgumentError, match="00:00:00:00:00:00"):
        Namespace(mac="00:00:00:00:00:00")
    _flush_pool()
    assert settled(_fds) == before
