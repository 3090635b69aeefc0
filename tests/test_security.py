"""Security: what code in a namespace cannot do, and what another local user cannot reach.

The threat model is in docs/security.md: a second local user is defended
against; the author of the tests is not.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vdens import Namespace, Switch, capabilities, default_switch_url
from pytest_vdens.client import helper
from pytest_vdens.libvdeplug import VdeConn

from .conftest import configure, wait_until

pytestmark = pytest.mark.timeout(300)

ALL_CAPS = capabilities.names()
ROOT = os.geteuid() == 0


def other_user() -> str | None:
    """A local user other than us that root can become (None when we are not root)."""
    if not ROOT:
        return None
    for name in ("cloudsdk", "vdenstest", "nobody"):
        if subprocess.run(["id", name], capture_output=True).returncode == 0:
            return name
    return None


def as_other_user(code: str) -> subprocess.CompletedProcess[str]:
    user = other_user()
    assert user is not None
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return subprocess.run(["runuser", "-u", user, "--", python, "-c", code],
                          capture_output=True, text=True, timeout=60, cwd="/")


# -- no capability in the host user namespace ------------------------------------------------

def _attempts(host_net: int) -> dict[str, str]:
    """Things that need a capability in the host's user namespace: what each one gives."""
    libc = ctypes.CDLL(None, use_errno=True)

    def try_(fn: object) -> str:
        try:
            fn()  # type: ignore[operator]
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e.errno))
        return "done"

    def setns() -> None:
        if libc.setns(host_net, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")

    def mknod() -> None:
        path = f"/tmp/vdens-null-{uuid.uuid4().hex}"
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def chown_away() -> None:
        path = f"/tmp/vdens-own-{uuid.uuid4().hex}"
        open(path, "w").close()
        try:
            os.chown(path, 4242, 4242)
        finally:
            os.unlink(path)

    return {
        "join the host's network namespace": try_(setns),
        "set the host name (to itself)": try_(lambda: socket.sethostname(socket.gethostname())),
        "make a device node": try_(mknod),
        "give a file away": try_(chown_away),
    }


def test_code_inside_with_every_capability_has_none_on_the_host() -> None:
    host_net = os.open("/proc/self/ns/net", os.O_RDONLY)  # inherited by the code inside
    try:
        with Namespace("-", caps=ALL_CAPS, sysadm=True) as ns:
            inside = ns.call(_attempts, host_net)
            # it does hold them, in its own user namespace
            held = ns.call(capabilities_held)
            for cap in ("sys_admin", "mknod", "chown", "net_admin"):
                assert held & (1 << capabilities.number(cap)), cap
        assert set(inside.values()) <= {"EPERM", "EINVAL"}, inside
        if ROOT:  # the same attempts succeed outside: the namespace is what stops them
            assert set(_attempts(host_net).values()) == {"done"}
    finally:
        os.close(host_net)


def capabilities_held() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff"))


def test_a_marked_test_cannot_get_back_to_the_host(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import os
        import pytest

        @pytest.fixture(scope="session")
        def worker():
            # set up outside: the pid of the pytest process, in the host's PID namespace
            return os.getpid(), os.readlink("/proc/self/ns/net"), os.readlink("/proc/self/ns/user")
    """)
    pytester.makepyfile("""
        import ctypes, os, socket, subprocess
        import pytest

        @pytest.mark.vdens(caps=%r, sysadm=True)
        def test_stays_inside(worker):
            pid, host_net, host_user = worker
            assert os.readlink("/proc/self/ns/user") != host_user
            assert os.readlink("/proc/self/ns/net") != host_net
            libc = ctypes.CDLL(None, use_errno=True)
            try:  # the host's namespaces, through the worker's /proc entry
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            except PermissionError:
                return
            assert libc.setns(fd, 0) == -1 and ctypes.get_errno() == 1  # EPERM
            userfd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
            assert libc.setns(userfd, 0) == -1
            with pytest.raises(ProcessLookupError):  # no pid of the host is ours to signal
                os.kill(pid, 0)
            assert os.readlink("/proc/self/ns/net") != host_net
    """ % ALL_CAPS)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- no way to the host's network ------------------------------------------------------------

def _host_address() -> str | None:
    """An IPv4 address of this host outside loopback."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else None


@pytest.fixture
def host_server() -> Iterator[tuple[list[str], int]]:
    """A TCP server on every address of the host (loopback included); its addresses and port."""
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"host")

    thread = threading.Thread(target=serve)
    thread.start()
    addresses = ["127.0.0.1"] + [a for a in [_host_address()] if a]
    yield addresses, port
    stop.set()
    thread.join()
    server.close()


def _reach(addresses: list[str], port: int) -> dict[str, str]:
    """What a connection to each address gives, from where this runs."""
    got = {}
    for address in addresses:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                got[address] = s.recv(10).decode()
        except OSError as e:
            got[address] = type(e).__name__
    return got


def test_a_namespace_has_no_route_to_the_host(host_server: tuple[list[str], int]) -> None:
    addresses, port = host_server
    assert set(_reach(addresses, port).values()) == {"host"}  # it is there, from outside
    with Namespace() as ns:
        assert ns.run(["ip", "route"], capture_output=True, text=True).stdout == ""
        assert set(ns.call(_reach, addresses, port).values()) <= {
            "ConnectionRefusedError", "OSError"}  # its own loopback; no route elsewhere
        # with an address and a default route on its switch, still nobody is there
        configure(ns, "10.77.0.1/24")
        ns.run(["ip", "route", "add", "default", "via", "10.77.0.254"], check=True)
        assert set(ns.call(_reach, addresses[1:], port).values()) <= {"TimeoutError", "OSError"}


def test_only_slirp_reaches_the_host(host_server: tuple[list[str], int]) -> None:
    addresses, port = host_server
    with Namespace(["slirp://"]) as ns:
        configure(ns, "10.0.2.15/24")
        ns.run(["ip", "route", "add", "default", "via", "10.0.2.2"], check=True)
        assert ns.call(_reach, ["10.0.2.2"], port) == {"10.0.2.2": "host"}


def test_a_marked_test_has_no_route_to_the_host(pytester: pytest.Pytester,
                                                host_server: tuple[list[str], int]) -> None:
    addresses, port = host_server
    pytester.makepyfile(f"""
        import socket, subprocess
        import pytest

        def reach(address):
            try:
                with socket.create_connection((address, {port}), timeout=1) as s:
                    return s.recv(10).decode()
            except OSError as e:
                return type(e).__name__

        @pytest.mark.vdens
        def test_inside():
            assert subprocess.run(["ip", "route"], capture_output=True, text=True).stdout == ""
            assert reach("127.0.0.1") == "ConnectionRefusedError"
            for address in {addresses[1:]!r}:
                assert reach(address) == "OSError"  # network unreachable
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- embedded switches: private to their user -------------------------------------------------

def _modes(top: str) -> dict[str, tuple[str, int, int]]:
    """Kind, permission bits and owner of `top` and everything under it."""
    found = {}
    for root, _dirs, files in os.walk(top):
        for path in [root] + [os.path.join(root, f) for f in files]:
            st = os.lstat(path)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "file"
            found[path] = (kind, stat.S_IMODE(st.st_mode) & 0o777, st.st_uid)
    return found


def test_embedded_switches_are_private_to_their_user() -> None:
    with Switch() as sw, Namespace([sw.url]) as ns, Namespace() as other, VdeConn(sw.url):
        configure(ns, "10.78.0.1/24")  # a port in use, and a peer from outside (a socket)
        top = helper().tmpdir
        modes = _modes(top)
        assert modes[top] == ("dir", 0o700, os.geteuid())
        for path in (sw.url, default_switch_url(), other.nets[0]):
            path = path.removeprefix("vde://")
            assert modes[path] == ("dir", 0o700, os.geteuid())
            assert modes[f"{path}/ctl"] == ("socket", 0o600, os.geteuid())
        sockets = {p: m for p, m in modes.items() if m[0] == "socket"}
        assert any(os.path.basename(p).startswith("fd") for p in sockets)  # the peer's port
        assert all(m[1] & 0o077 == 0 and m[2] == os.geteuid() for m in sockets.values()), sockets
        files = {p: m for p, m in modes.items() if m[0] == "file"}
        assert all(m[1] & 0o022 == 0 for m in files.values()), files


@pytest.mark.skipif(other_user() is None, reason="needs root, to become another local user")
def test_another_user_cannot_join_or_list_an_embedded_switch() -> None:
    with Switch() as sw:
        ctl = sw.url.removeprefix("vde://") + "/ctl"
        out = as_other_user(f"""
import os, socket
for path in ({ctl!r}, {os.path.dirname(ctl)!r}, {helper().tmpdir!r}):
    try:
        if path.endswith("/ctl"):
            socket.socket(socket.AF_UNIX).connect(path)
        else:
            os.listdir(path)
        print("reached", path)
    except PermissionError:
        print("refused", path)
""")
        assert out.stdout.split() == ["refused", ctl, "refused", os.path.dirname(ctl),
                                      "refused", helper().tmpdir], out.stderr
        # and it still serves its own user
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(ctl)


@pytest.mark.skipif(other_user() is None, reason="needs root, to become another local user")
def test_another_user_cannot_join_even_with_the_directory_open() -> None:
    # the sockets are 0600 themselves: a directory made traversable does not open them
    with Switch() as sw:
        path = sw.url.removeprefix("vde://")
        top = helper().tmpdir
        for d in (top, path):
            os.chmod(d, 0o711)
        try:
            out = as_other_user(f"""
import socket
try:
    socket.socket(socket.AF_UNIX).connect({path + "/ctl"!r})
    print("joined")
except PermissionError:
    print("refused")
""")
        finally:
            os.chmod(top, 0o700)
            os.chmod(path, 0o2700)
        assert out.stdout.strip() == "refused", out.stderr


@pytest.mark.parametrize("length", [95, 120])
def test_with_a_long_tmpdir_switch_sockets_stay_in_a_private_directory(length: int) -> None:
    # $TMPDIR, the helper's directory and "sw1/ctl" would pass sun_path's 108 bytes
    base = tempfile.mkdtemp(prefix="pytest-longtmp-")
    long_tmp = Path(base) / ("t" * (length - len(base) - 1))
    long_tmp.mkdir()
    script = ("import pytest_vdens, os; url = pytest_vdens.default_switch_url(); "
              "print(url, flush=True); input()")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(long_tmp)},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ctl = proc.stdout.readline().strip().removeprefix("vde://") + "/ctl"
        assert len(ctl.encode()) < 108 and stat.S_ISSOCK(os.stat(ctl).st_mode), ctl
        switch_dir = os.path.dirname(ctl)
        for path in (switch_dir, os.path.dirname(switch_dir)):
            assert _modes(path)[path] == ("dir", 0o700, os.geteuid())
        assert [p for p, m in _modes(base).items() if m[0] == "socket"] == []
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(other_user() is None, reason="needs root, to become another local user")
def test_another_user_cannot_plant_the_address_lease_directory(vde_switch: str) -> None:
    shared = tempfile.mkdtemp(prefix="pytest-sharedtmp-")  # a /tmp of its own: 1777
    os.chmod(shared, 0o1777)
    planted = os.path.join(shared, f"vdens-leases-{os.geteuid()}")
    try:
        out = as_other_user(f"import os; os.mkdir({planted!r}); os.chmod({planted!r}, 0o777)")
        assert out.returncode == 0, out.stderr
        script = textwrap.dedent(f"""
            import os
            from pytest_vdens import Namespace, VdensError
            try:
                with Namespace([{vde_switch!r}], addr="auto"):
                    for root, dirs, files in os.walk({planted!r}):
                        for name in dirs + files:
                            path = os.path.join(root, name)
                            if os.lstat(path).st_uid == os.geteuid():
                                print("ours:", path)
            except VdensError as e:
                print("refused:", e)
        """)
        out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TMPDIR": shared},
                             capture_output=True, text=True, timeout=60)
        # nothing of ours goes into a directory another user controls
        assert "ours:" not in out.stdout, out.stdout + out.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# -- the helper's own channel ----------------------------------------------------------------

def _unix_paths() -> dict[int, str]:
    """inode -> path (or '' for an unnamed socket) of the unix sockets in this network namespace."""
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {int(r[6]): (r[7] if len(r) > 7 else "") for r in rows}


def _socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode of process `pid`."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found[int(fd)] = int(target[8:-1])
    return found


def _inet_inodes() -> set[int]:
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        with open(f"/proc/net/{table}") as f:
            inodes |= {int(line.split()[9]) for line in f.readlines()[1:]}
    return inodes


def test_the_helper_is_reached_through_a_socketpair_only() -> None:
    with Switch(), Namespace():
        h = helper()
        argv = open(f"/proc/{h.pid}/cmdline").read().split("\0")
        control = int(argv[argv.index("pytest_vdens.helper") + 1])
        helper_sockets = _socket_inodes(h.pid)
        paths = _unix_paths()
        # the control channel has no name: only who holds its other end can talk to it
        assert paths[helper_sockets[control]] == ""
        ours = set(_socket_inodes(os.getpid()).values())
        assert h.sock.fileno() in _socket_inodes(os.getpid())
        assert helper_sockets[control] not in ours
        # whatever else the helper listens on is inside its private directory
        named = [paths[i] for i in helper_sockets.values() if paths.get(i)]
        assert named and all(p.startswith(h.tmpdir + "/") for p in named), named
        # and it has no network socket of the host's
        assert not set(helper_sockets.values()) & _inet_inodes()


# -- resolver injection stays inside -------------------------------------------------------

def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)  # root, mount point


def test_resolver_injection_leaves_the_hosts_resolv_conf_and_mounts_alone() -> None:
    conf = Path("/etc/resolv.conf")
    before = (conf.read_bytes(), os.stat(conf).st_mtime_ns, os.stat(conf).st_ino, _mounts())
    with Namespace("-", resolver="192.0.2.53") as a, Namespace("-", sysadm=True) as b:
        inside = a.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True, check=True)
        assert inside.stdout == "nameserver 192.0.2.53\n"
        # root inside may write it, and mount: it is their copy, their mount table
        a.run(["sh", "-c", "echo nameserver 6.6.6.6 >> /etc/resolv.conf"], caps=ALL_CAPS)
        assert b.run(["mount", "-t", "tmpfs", "none", "/mnt"]).returncode == 0
        assert (conf.read_bytes(), os.stat(conf).st_mtime_ns, os.stat(conf).st_ino,
                _mounts()) == before
        marker = Path(f"/tmp/vdens-visible-{uuid.uuid4().hex}")  # /tmp inside is the host's
        marker.touch()
        try:
            assert a.run(["test", "-e", str(marker)]).returncode == 0
        finally:
            marker.unlink()
    assert (conf.read_bytes(), os.stat(conf).st_mtime_ns, os.stat(conf).st_ino, _mounts()) == before


def test_a_resolvconf_file_is_shown_inside_not_copied(tmp_path: Path) -> None:
    mine = tmp_path / "resolv.conf"
    mine.write_text("nameserver 192.0.2.54\n")
    host = Path("/etc/resolv.conf").read_bytes()
    with Namespace("-", resolvconf=mine) as ns:
        assert ns.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True).stdout == \
            "nameserver 192.0.2.54\n"
    assert Path("/etc/resolv.conf").read_bytes() == host
    assert os.listdir(tmp_path) == ["resolv.conf"]


def test_writing_resolv_conf_inside_leaves_the_given_file_alone(tmp_path: Path) -> None:
    mine = tmp_path / "resolv.conf"
    mine.write_text("nameserver 192.0.2.54\n")
    with Namespace("-", resolvconf=mine) as ns:
        ns.run(["sh", "-c", "echo nameserver 6.6.6.6 >> /etc/resolv.conf"])
    assert mine.read_text() == "nameserver 192.0.2.54\n"


# -- names and URLs from markers -----------------------------------------------------------

def _find(word: str, tops: list[str]) -> list[str]:
    found = []
    for top in tops:
        for root, dirs, files in os.walk(top):
            found += [os.path.join(root, n) for n in dirs + files if word in n]
    return found


def test_marker_names_and_urls_write_nothing_outside_the_plugins_directories(
        pytester: pytest.Pytester, no_leaks: str) -> None:
    word = f"canary{uuid.uuid4().hex[:8]}"
    evil = [f"../../../{word}", f"/tmp/{word}", f"{word}/../../{word}", f"~/{word}",
            f"./{word}/sw", "/" + "d" * 150 + f"/{word}"]
    urls = evil + [f"vde://{p}" for p in evil] + [f"null://{word}", f"slirp://{word}"]
    pytester.makepyfile(test_hostile=f"""
        import pytest

        EVIL = {evil!r}
        URLS = {urls!r}

        @pytest.mark.vdens(nets=["-"], iface={"../" + word!r})
        def test_iface():
            pass

        @pytest.mark.parametrize("url", URLS, ids=[u.replace("/", "_") for u in URLS])
        def test_factory(make_vdens_ns, url):
            from pytest_vdens import VdensError
            try:
                make_vdens_ns([url])
            except VdensError:
                pass

        @pytest.mark.vdens(nets="-", resolver={"../" + word!r})
        def test_resolver():
            pass

        @pytest.mark.vdens(nets="-", resolvconf="../../../../../../etc/hostname")
        def test_resolvconf_is_only_read():
            assert open("/etc/resolv.conf").read() == open("/etc/hostname").read()

        @pytest.mark.parametrize("name", EVIL, ids=EVIL)
        @pytest.mark.vdens
        def test_odd_test_ids(name, vdens_switch):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA",
                                           "--vdens-switch", f"vde://../{word}",
                                           "--vdens-switch", "")
    assert result.ret in (0, 1), result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str()
    home = os.path.expanduser("~")
    tops = ["/tmp", str(pytester.path), home] if home != "/" else ["/tmp", str(pytester.path)]
    assert _find(word, tops) == []
    assert not any(os.path.exists(os.path.join(d, word)) for d in ("/", "/etc", "/var/tmp"))


def test_a_switch_url_creates_its_switch_where_it_says_and_removes_it(pytester: pytest.Pytester,
                                                                      no_leaks: str) -> None:
    # switch:// and hub:// are libvdeplug's own nodes: the test author asks for a place
    place = os.path.join(no_leaks, "their-switch")
    pytester.makepyfile(f"""
        import os
        import pytest

        @pytest.mark.vdens(nets=["switch://{place}"])
        def test_inside():
            assert os.path.exists({place!r} + "/ctl")
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert wait_until(lambda: not os.path.exists(place), 2)
