"""The namespace engine end to end: real namespaces, taps, libvdeplug and VDE peers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from pytest_vdens import CallCrashed, Namespace, NamespaceClosed, RemoteTraceback
from pytest_vdens.libvdeplug import VdeConn

from .conftest import configure, echo, start_echo_server


def test_two_namespaces_talk_tcp_over_the_embedded_switch() -> None:
    with Namespace() as a, Namespace() as b:
        assert a.nets == b.nets and a.nets[0].startswith("vde://")
        configure(a, "10.0.0.1/24")
        configure(b, "10.0.0.2/24")
        start_echo_server(b, "10.0.0.2", 5000)
        payload = os.urandom(1 << 20)
        assert a.call(echo, "10.0.0.2", 5000, payload) == payload


def test_ipv6_and_ping_between_namespaces() -> None:
    with Namespace() as a, Namespace() as b:
        configure(a, "fd00::1/64")
        configure(b, "fd00::2/64")
        out = a.run(["ping", "-c", "2", "-i", "0.2", "-W", "5", "fd00::2"],
                    capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert " 0% packet loss" in out.stdout


def test_a_namespace_starts_isolated_with_lo_up_and_one_tap_per_network() -> None:
    with Namespace(["-"]) as none, Namespace([None, None], iface="nsif") as two:
        assert none.interfaces == ()
        links = none.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        assert "UP" in links
        assert two.interfaces == ("nsif0", "nsif1")
        out = two.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert "nsif0:" in out and "nsif1:" in out
        # nothing of the host's network is visible
        host = {name for _, name in socket.if_nameindex()}
        inside = set(two.call(lambda: [n for _, n in socket.if_nameindex()]))
        assert inside == {"lo", "nsif0", "nsif1"}
        assert not (host - {"lo"}) & inside


def test_real_vdens_on_an_external_vde_switch_reaches_a_namespace(vde_switch: str) -> None:
    with Namespace([vde_switch]) as ns:
        configure(ns, "10.1.0.1/24")
        start_echo_server(ns, "10.1.0.1", 7000)
        # vdens 0.2 loses the exit status, so the peer prints its result; and it misses
        # its command's exit while it forwards a frame (the connection's last ones): the
        # command ends once they are through
        script = ("ip addr add 10.1.0.2/24 dev vde0 && ip link set vde0 up && "
                  f"{sys.executable} -c \"import socket; s=socket.create_connection(('10.1.0.1',7000),10);"
                  "s.sendall(b'from-vdens'); print('got', s.recv(100).decode())\"; sleep 0.3")
        out = subprocess.run(["vdens", vde_switch, "sh", "-c", script],
                             capture_output=True, text=True, timeout=60)
        assert "got from-vdens" in out.stdout, out.stdout + out.stderr


def test_real_vde_plug_joins_the_embedded_switch() -> None:
    with Namespace() as ns:
        configure(ns, "10.2.0.1/24")
        # a second libvdeplug user, in this process, on the same switch: it must see our ARP
        with VdeConn(ns.nets[0]) as peer:
            ns.run(["ping", "-c", "1", "-W", "1", "10.2.0.9"], capture_output=True)
            frame = peer.recv()
            while len(frame) < 14 or frame[12:14] != b"\x08\x06":
                frame = peer.recv()
        assert frame[:6] == b"\xff" * 6  # broadcast ARP who-has
        assert socket.inet_ntoa(frame[14 + 24:14 + 28]) == "10.2.0.9"


def test_slirp_namespace_reaches_a_server_on_host_loopback() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello from the host: " + conn.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with Namespace(["slirp://"]) as ns:
        configure(ns, "10.0.2.15/24")
        ns.run(["ip", "route", "add", "default", "via", "10.0.2.2"], check=True)

        def fetch() -> bytes:
            with socket.create_connection(("10.0.2.2", port), timeout=10) as s:
                s.sendall(b"ns")
                return s.recv(100)

        assert ns.call(fetch) == b"hello from the host: ns"
    server.close()


def test_call_returns_values_and_reraises_exceptions_with_their_traceback() -> None:
    with Namespace() as ns:
        assert ns.call(lambda a, b=0: a + b, 2, b=3) == 5
        assert ns.call(socket.gethostname) == socket.gethostname()

        def inside_fails() -> None:
            raise KeyError("deep inside")

        with pytest.raises(KeyError, match="deep inside") as info:
            ns.call(inside_fails)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "inside_fails" in str(info.value.__cause__)


def test_call_reports_a_crash_clearly() -> None:
    with Namespace() as ns:
        with pytest.raises(CallCrashed, match="exited with status 7"):
            ns.call(os._exit, 7)
        with pytest.raises(CallCrashed, match="SIGKILL"):
            ns.call(lambda: os.kill(os.getpid(), 9))
        assert ns.call(lambda: "still usable") == "still usable"


def test_code_inside_has_the_network_capabilities_only(unprivileged: bool) -> None:
    with Namespace() as ns:
        def bind80() -> int:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 80))
                return int(s.getsockname()[1])

        assert ns.call(bind80) == 80
        # and in an exec'd program, as the same (maybe unprivileged) user
        out = ns.run([sys.executable, "-c",
                      "import socket,os; s=socket.socket(); s.bind(('127.0.0.1',80)); print(os.getuid())"],
                     capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == os.getuid()
        assert ns.run(["ip", "link", "set", "vde0", "mtu", "1400"]).returncode == 0
        # nothing beyond: no SYS_ADMIN, so no mount
        assert ns.run(["mount", "-t", "tmpfs", "none", "/mnt"], capture_output=True).returncode != 0
        if unprivileged:
            with pytest.raises(PermissionError):
                bind80()


def test_sysadm_and_caps_choose_the_capabilities() -> None:
    status = "import re;print(re.search('CapEff:\\\\s*(\\\\S+)',open('/proc/self/status').read())[1])"
    with Namespace("-", caps=[]) as bare, Namespace("-", sysadm=True) as admin:
        assert int(bare.run([sys.executable, "-c", status], capture_output=True, text=True,
                            check=True).stdout, 16) == 0
        eff = int(admin.run([sys.executable, "-c", status], capture_output=True, text=True,
                            check=True).stdout, 16)
        assert eff == (1 << 21) | (1 << 12) | (1 << 13) | (1 << 10) | (1 << 11)
        assert admin.run(["mount", "-t", "tmpfs", "none", "/mnt"]).returncode == 0


def test_resolver_is_injected_privately() -> None:
    host_conf = open("/etc/resolv.conf").read()
    with Namespace("-", resolver="192.0.2.53,2001:db8::53") as ns:
        inside = ns.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True, check=True)
        assert inside.stdout == "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"
        assert open("/etc/resolv.conf").read() == host_conf
    with open("/proc/self/mountinfo") as f:
        assert "resolv.conf" not in f.read()


def test_using_a_closed_namespace_is_an_error() -> None:
    ns = Namespace("-")
    ns.close()
    ns.close()
    with pytest.raises(NamespaceClosed, match="closed"):
        ns.run(["true"])


def test_popen_runs_inside_and_is_killed_at_close() -> None:
    ns = Namespace()
    proc = ns.popen(["sleep", "1000"])
    inside = ns.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True).stdout
    assert os.readlink(f"/proc/{proc.pid}/ns/net") == inside.strip()
    assert inside.strip() != os.readlink("/proc/self/ns/net")
    ns.close()
    assert proc.returncode == -9


def test_vde_plug_is_a_real_peer_of_a_vde_plug_switch(tmp_path: os.PathLike[str]) -> None:
    # a switch:// made by vde_plug, as the man page of vde_plug shows
    sw = os.path.join(tmp_path, "sw")
    proc = subprocess.Popen([shutil.which("vde_plug") or "vde_plug", f"switch://{sw}", "null://"])
    try:
        from .conftest import wait_until
        assert wait_until(lambda: os.path.exists(os.path.join(sw, "ctl")))
        with Namespace([sw]) as a, Namespace([f"vde://{sw}"]) as b:  # a bare path means vde://
            configure(a, "10.3.0.1/24")
            configure(b, "10.3.0.2/24")
            assert a.run(["ping", "-c", "1", "-W", "5", "10.3.0.2"]).returncode == 0
    finally:
        proc.terminate()
        proc.wait()


NET_CAPS = (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13)  # NET_BIND_SERVICE, _BROADCAST, _ADMIN, _RAW


@pytest.mark.parametrize("threads", [False, True], ids=["single-threaded", "with-a-thread"])
def test_fork_gives_our_own_child_inside_with_the_network_capabilities(threads: bool) -> None:
    # pytest may have threads (xdist's): the child is forked inside either way
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait)
    if threads:
        waiter.start()
    try:
        with Namespace() as ns:
            r, w = os.pipe()
            pid = ns.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os.close(w)
                    os.read(r, 1)  # until the parent has looked at us
                    status = open("/proc/self/status").read()
                    eff = int(status.split("CapEff:")[1].split()[0], 16)
                    os._exit(7 if socket.if_nameindex() == [(1, "lo"), (2, "vde0")]
                             and eff == NET_CAPS else 3)
                finally:
                    os._exit(4)
            os.close(r)
            try:
                assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{ns.init_pid}/ns/net")
            finally:
                os.close(w)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7  # ours, no stand-in
    finally:
        stop.set()
        if threads:
            waiter.join()


@pytest.mark.parametrize("threads", [False, True], ids=["single-threaded", "with-a-thread"])
def test_fork_from_inside_gives_our_own_child(threads: bool) -> None:
    # as a marked test does, already inside, with the namespace's capabilities only
    def inside() -> int:
        stop = threading.Event()
        waiter = threading.Thread(target=stop.wait)
        if threads:
            waiter.start()
        try:
            pid = ns.fork()
            if pid == 0:  # pragma: no cover - the child
                os._exit(7)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        finally:
            stop.set()
            if threads:
                waiter.join()

    with Namespace() as ns:
        assert ns.call(inside) == 7


def test_threads_work_inside_and_signals_reach_the_program() -> None:
    with Namespace() as ns:
        def threaded() -> int:
            t = threading.Thread(target=lambda: None)
            t.start()
            t.join()
            return os.getpid()

        assert ns.call(threaded) > 1
        proc = ns.popen([sys.executable, "-c",
                         "import threading,time; threading.Thread(target=time.sleep,args=(100,)).start()"
                         "; print('ok', flush=True); time.sleep(100)"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
        proc.terminate()
        assert proc.wait(10) == -15
        assert ns.run(["sh", "-c", "exit 7"]).returncode == 7
        with pytest.raises(FileNotFoundError):
            ns.run(["/no/such/program"])


def test_two_namespaces_on_vxvde_reach_each_other_and_close() -> None:
    group = f"vxvde://239.{os.getpid() % 200 + 1}.{os.getpid() // 200 % 250}.77"
    with Namespace([group], addr="10.77.0.1/24") as a, Namespace([group], addr="10.77.0.2/24"):
        out = a.run(["ping", "-c", "2", "-i", "0.2", "-W", "5", "10.77.0.2"], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout
