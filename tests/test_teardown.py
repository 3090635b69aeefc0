"""Closing a namespace, or losing the process that made it, leaves nothing behind."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import textwrap

from pytest_vdens import Namespace, Switch, close_all
from pytest_vdens.client import helper

from .conftest import alive, configure, holders_of, processes_in, wait_until


def ns_inode(ns: Namespace, kind: str = "net") -> str:
    fd = ns._fds[kind]
    return os.readlink(f"/proc/self/fd/{fd}")


_TUNGETDEVNETNS = 0x54E3
_SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)


def taps_in(pid: int, net: str) -> int:
    """How many tap fds process `pid` holds whose device lives in network namespace `net`."""
    count = 0
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    if "iff:" not in f.read():
                        continue
            except OSError:
                continue
            mine = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            assert mine >= 0, os.strerror(ctypes.get_errno())
            try:
                nsfd = fcntl.ioctl(mine, _TUNGETDEVNETNS)
                count += os.readlink(f"/proc/self/fd/{nsfd}") == net
                os.close(nsfd)
            finally:
                os.close(mine)
    finally:
        os.close(pidfd)
    return count


def test_close_kills_every_process_started_inside() -> None:
    ns = Namespace()
    net = ns_inode(ns)
    ns.popen(["sh", "-c", "sleep 1000 & sleep 1001 & wait"])
    ns.run(["sh", "-c", "setsid sleep 1002 >/dev/null 2>&1 < /dev/null &"])  # a daemon
    ns.call(lambda: subprocess.Popen(["sleep", "1003"]) and None)
    assert wait_until(lambda: len(processes_in(net)) >= 5)  # + init and sh
    ns.close()
    assert processes_in(net) == []


def test_close_releases_the_taps_and_the_network_namespace() -> None:
    h = helper()
    ns = Namespace([None, None, None])
    configure(ns, "10.9.0.1/24")
    net = ns_inode(ns)
    assert taps_in(h.pid, net) == 3
    ns.close()
    # no fd and no process holds it: the kernel deletes it and its taps
    assert taps_in(h.pid, net) == 0
    assert holders_of(net) == []


def test_closing_many_namespaces_is_not_serialised_on_tap_deletion() -> None:
    import time

    spaces = [Namespace([None, None]) for _ in range(20)]
    start = time.perf_counter()
    for ns in spaces:
        ns.close()
    per_ns = (time.perf_counter() - start) / len(spaces)
    # a synchronous tap deletion costs ~25 ms each (two per namespace here)
    assert per_ns < 0.025, f"{per_ns * 1000:.1f} ms per close"


def test_close_all_ends_a_whole_topology_at_once() -> None:
    """close_all(): every process inside every namespace gone when it returns, and
    nothing of ours left: captures deleted, namespaces already closed skipped."""
    spaces = [Namespace(addr="auto", capture=True) for _ in range(12)]
    nets = [ns_inode(ns) for ns in spaces]
    for ns in spaces:
        ns.popen(["sleep", "1000"])
    captures = [path for ns in spaces for path in ns.captures.values()]
    spaces[0].close()
    fds = len(os.listdir("/proc/self/fd"))
    close_all(spaces)
    assert all(ns.closed for ns in spaces)
    assert [net for net in nets if processes_in(net)] == []
    assert [path for path in captures if os.path.exists(path)] == []
    assert len(os.listdir("/proc/self/fd")) == fds - 3 * 11  # user, net, pid fds of each
    close_all(spaces)  # idempotent, as close() is
    with Namespace() as ns:  # the helper goes on
        assert ns.run(["true"]).returncode == 0


LOSE_PARENT = textwrap.dedent("""
    import os, sys, time
    from pytest_vdens import Namespace, close_all
    from pytest_vdens.client import helper
    a, b = Namespace(), Namespace(["slirp://"])
    daemon = a.popen(["sh", "-c", "sleep 1000 & wait"])
    h = helper().pid
    with open(f"/proc/{{h}}/task/{{h}}/children") as f:
        kids = f.read().split()
    zygote = [k for k in kids if open(f"/proc/{{k}}/comm").read().strip() == "vdens-zygote"]
    print(h, helper().tmpdir, a.init_pid, b.init_pid, daemon.pid, *zygote, flush=True)
    {ending}
""")


def run_and_lose(ending: str) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", LOSE_PARENT.format(ending=ending)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    fields = proc.stdout.readline().split()
    proc.wait(30)
    return fields


def check_all_gone(fields: list[str]) -> None:
    helper_pid, tmpdir, *pids = fields
    assert len(pids) == 4, fields  # two inits, a daemon inside, the zygote
    assert os.path.isdir(tmpdir) is False or wait_until(lambda: not os.path.exists(tmpdir), 2)
    for pid in [int(helper_pid), *map(int, pids)]:
        assert wait_until(lambda p=pid: not alive(p), 2), f"pid {pid} survived"
    assert not os.path.exists(tmpdir)
    leftovers = subprocess.run(["pgrep", "-f", f"switch://{tmpdir}"], capture_output=True, text=True)
    assert leftovers.stdout == ""


def test_inits_are_the_helpers_children_made_by_its_zygote() -> None:
    # the zygote clones them (a small process, not the helper), as the helper's children
    with Namespace() as a, Namespace() as b:
        h = helper().pid
        for ns in (a, b):
            with open(f"/proc/{ns.init_pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == h
            with open(f"/proc/{ns.init_pid}/comm") as f:
                assert f.read().strip() == "vdens-init"
        with open(f"/proc/{h}/task/{h}/children") as f:
            kids = f.read().split()
        names = []
        for k in kids:
            with open(f"/proc/{k}/comm") as f:
                names.append(f.read().strip())
        # the others: inits, some made ahead for the next namespaces
        assert sorted(set(names)) == ["vdens-init", "vdens-zygote"], names
        # one zygote: an init just cloned still has its name, but a PID namespace of its own
        own = os.readlink(f"/proc/{h}/ns/pid")
        zygotes = [k for k in kids if os.readlink(f"/proc/{k}/ns/pid") == own]
        assert len(zygotes) == 1, names
        with open(f"/proc/{zygotes[0]}/comm") as f:
            assert f.read().strip() == "vdens-zygote"
        assert os.readlink(f"/proc/{a.init_pid}/ns/net") != os.readlink(f"/proc/{b.init_pid}/ns/net")


def _zygote() -> int:
    h = helper().pid
    with open(f"/proc/{h}/task/{h}/children") as f:
        for kid in f.read().split():
            with open(f"/proc/{kid}/comm") as comm:
                if comm.read().strip() == "vdens-zygote":
                    return int(kid)
    raise AssertionError("the helper has no zygote")


def test_a_killed_zygote_is_replaced_and_the_helper_goes_on() -> None:
    with Namespace() as before:
        helper().request("drain")  # nothing made ahead: the next namespace needs the zygote
        old = _zygote()
        os.kill(old, signal.SIGKILL)
        assert wait_until(lambda: not alive(old))
        with Namespace() as after:
            assert after.run(["true"]).returncode == 0
            assert before.run(["true"]).returncode == 0
        assert _zygote() != old


def test_closes_not_waited_for_are_done_before_the_next_request() -> None:
    # far more than the socket holds unread replies: the client must not deadlock the helper
    spaces = [Namespace() for _ in range(100)]
    switches = [Switch() for _ in range(2000)]
    inits = [ns.init_pid for ns in spaces]
    nets = [ns_inode(ns) for ns in spaces]
    for ns in spaces:
        ns.close(wait=False)
    for sw in switches:
        sw.close(wait=False)
    helper().request("settle")
    assert [pid for pid in inits if alive(pid)] == []
    assert sum(taps_in(helper().pid, net) for net in nets) == 0  # closed off the helper's loop
    assert [sw.url for sw in switches if os.path.exists(sw.url[len("vde://"):])] == []
    with Namespace() as ns:
        assert ns.run(["true"]).returncode == 0


def test_the_helper_and_everything_it_made_die_with_a_killed_parent() -> None:
    check_all_gone(run_and_lose("os.kill(os.getpid(), 9)"))


def test_the_helper_cleans_up_when_its_parent_exits_normally() -> None:
    check_all_gone(run_and_lose("sys.exit(0)"))


def test_the_helper_survives_its_parent_thread_exiting() -> None:
    # PDEATHSIG fires when the *thread* that started the helper ends
    script = textwrap.dedent("""
        import threading, time
        from pytest_vdens import Namespace, close_all
        from pytest_vdens.client import helper
        t = threading.Thread(target=lambda: Namespace().close())
        t.start(); t.join()
        time.sleep(0.3)
        with Namespace() as ns:
            print(ns.run(["true"]).returncode, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout == "0\n", out.stderr


def test_shutdown_stops_the_helper_and_the_embedded_switch() -> None:
    script = textwrap.dedent("""
        import os
        import pytest_vdens
        from pytest_vdens.client import helper
        url = pytest_vdens.default_switch_url()
        pid, tmp = helper().pid, helper().tmpdir
        assert os.path.exists(url[len("vde://"):] + "/ctl")
        pytest_vdens.shutdown()
        print(pid, tmp, flush=True)
        import time; time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid, tmp = proc.stdout.readline().split()
        assert not alive(int(pid)) and not os.path.exists(tmp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
