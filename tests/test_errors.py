"""Bad input and a hostile environment give clear errors; nothing leaks; the helper goes on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pytest_vdens import (
    ArgumentError,
    InterfaceNameError,
    Namespace,
    NetworkError,
    TunError,
    UserNamespaceError,
    VdensError,
)
from pytest_vdens.client import helper

TRY_NAMESPACE = """
from pytest_vdens import Namespace, VdensError
try:
    Namespace()
except VdensError as e:
    print(type(e).__name__, e)
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """fds(pid) once the helper has finished making namespaces ahead (its pool)."""
    counts = [fds(pid)]
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        time.sleep(0.02)
        counts.append(fds(pid))
    return counts[-1]


@pytest.fixture
def helper_unharmed() -> Iterator[None]:
    """The helper that saw the error is the same process, with no fd more, and still serves."""
    h = helper()
    Namespace().close()
    h.request("drain")  # the namespaces it made ahead depend on timing
    before = (h.pid, settled_fds(h.pid), fds(os.getpid()))
    yield
    h.request("drain")
    assert (helper().pid, settled_fds(h.pid), fds(os.getpid())) == before
    with Namespace() as ns:
        assert ns.run(["true"]).returncode == 0


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("url, words", [
    ("foo://bar", ["'foo://bar'", "libvdeplug_foo.so", "vxvde://"]),
    ("vde:///no/such/switch", ["/no/such/switch", "vde_switch -s /no/such/switch"]),
    ("/no/such/switch", ["/no/such/switch", "vde_plug switch:///no/such/switch"]),
    ("udp://nonsense", ["'udp://nonsense'", "vde_plug(1)"]),
    ("vde://", ["'vde://'"]),
])
def test_a_network_that_cannot_be_opened_is_named(url: str, words: list[str]) -> None:
    with pytest.raises(NetworkError) as info:
        Namespace([url])
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("none", ["-", "no", "", ["-"], []])
def test_dash_no_and_empty_mean_no_interface_as_in_vdens(none: object) -> None:
    with Namespace(none) as ns:  # type: ignore[arg-type]
        assert ns.interfaces == ()


@pytest.mark.usefixtures("helper_unharmed")
def test_a_failing_second_network_releases_the_first() -> None:
    with pytest.raises(NetworkError, match="no/such"):
        Namespace([None, "vde:///no/such"])


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("prefix", ["averyverylongname", "", "a/b", "sp ace", "x" * 15])
def test_an_interface_prefix_the_kernel_would_refuse(prefix: str) -> None:
    with pytest.raises(InterfaceNameError, match="interface prefix"):
        Namespace(iface=prefix)


def test_the_longest_valid_prefix_works() -> None:
    with Namespace(iface="x" * 14) as ns:
        assert ns.interfaces == ("x" * 14 + "0",)
        assert ns.run(["ip", "link", "show", "x" * 14 + "0"], capture_output=True).returncode == 0


@pytest.mark.usefixtures("helper_unharmed")
@pytest.mark.parametrize("kwargs, words", [
    ({"caps": ["net_admin", "fly"]}, ["'fly'", "capabilities(7)"]),
    ({"resolver": "8.8.8.8,not-an-ip"}, ["'not-an-ip'", "IPv4 or IPv6"]),
    ({"resolvconf": "/no/such/resolv.conf"}, ["/no/such/resolv.conf", "readable file"]),
    ({"nets": ["-", "vde:///x"]}, ["mixes"]),
    ({"nets": [3]}, ["3", "not a string"]),
])
def test_bad_arguments_are_named(kwargs: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ArgumentError) as info:
        Namespace(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def run_confined(setup: str) -> str:
    """Run TRY_NAMESPACE in a fresh user+mount namespace after a shell `setup`."""
    out = subprocess.run(["unshare", "-Urm", "sh", "-c", f'{setup} && exec "$0" -c "$1"',
                          sys.executable, TRY_NAMESPACE],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_no_tun_device_is_a_clear_error() -> None:
    out = run_confined("mount -t tmpfs none /dev/net")
    assert out.startswith("TunError cannot open /dev/net/tun"), out
    assert "modprobe tun" in out


def test_user_namespaces_disabled_is_a_clear_error_with_the_sysctl_to_change() -> None:
    # the limit is per user namespace: set it to 0 in a private one
    out = run_confined("echo 0 > /proc/sys/user/max_user_namespaces")
    assert out.startswith("UserNamespaceError cannot create a user namespace"), out
    assert "sysctl -w user.max_user_namespaces=" in out


def test_every_error_is_a_vdens_error() -> None:
    for cls in (NetworkError, InterfaceNameError, TunError, UserNamespaceError, ArgumentError):
        assert issubclass(cls, VdensError)
