"""pyvdens next to the real vdens, and what the namespace promises to the code inside.

Parity tests run `vdens ARGS sh -c SCRIPT` and `python -m pytest_vdens ARGS sh -c SCRIPT`
on the same real vde_switch and compare what SCRIPT sees. Deliberate differences
(docs/vdens-differences.md) are asserted as such.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vdens import Namespace

from .conftest import accepts_connections, configure, wait_until
from .test_cli import SETTLE, processes_with_arg

PYVDENS = [sys.executable, "-m", "pytest_vdens"]
DEFAULT_CAPS = 0x3C00  # NET_BIND_SERVICE, NET_BROADCAST, NET_ADMIN, NET_RAW
SYS_ADMIN = 1 << 21

OBSERVE = r"""
ip -o link | while read -r _ name flags _; do echo "link ${name%:} $flags"; done
echo "uid $(id -u)"
echo "gid $(id -g)"
grep -E '^Cap(Inh|Eff|Amb):' /proc/self/status | tr -d : | tr '\t' ' '
echo "resolv $(tr '\n' ';' < /etc/resolv.conf)"
"""


def observe(tool: list[str], args: list[str], env: dict[str, str],
            settle: bool = False) -> dict[str, str]:
    """What a shell started by `tool ARGS` sees: {'links': ..., 'uid': ..., 'CapEff': ...}.

    settle: sleep before exiting, for vdens (see test_cli.SETTLE).
    """
    script = OBSERVE + (SETTLE if settle else "")
    out = subprocess.run([*tool, *args, "sh", "-c", script], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=60)
    seen: dict[str, str] = {"links": "", "flags": ""}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "link":
            name, flags = value.split(" ", 1)
            seen["links"] += f"{name} "
            seen["flags"] += f"{name}={flags} "
        else:
            seen[key] = value
    assert "resolv" in seen, out.stdout + out.stderr
    return seen


@pytest.fixture
def another_switch(tmp_path: Path) -> Iterator[str]:
    """A second real vde_switch, for -m."""
    sock = tmp_path / "sw2"
    proc = subprocess.Popen(["vde_switch", "-s", str(sock)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: accepts_connections(f"vde://{sock}")), "vde_switch did not start"
    yield f"vde://{sock}"
    proc.kill()
    proc.wait()


CONF = "nameserver 192.0.2.1\nsearch parity.test\n"
HOST = "the host's own"
R = "nameserver 9.9.9.9\nnameserver 2620:fe::fe\n"
ENV = "nameserver 9.9.8.8\n"

# ARGS, environment, interfaces and resolv.conf expected inside.
# SW, SW2 and CONF stand for two switches and a resolv.conf file.
PARITY = {
    "one network": (["SW"], {}, "lo vde0", HOST),
    "no network": (["-"], {}, "lo", HOST),
    "sysadm": (["-s", "SW"], {}, "lo vde0", HOST),
    "multi, eth prefix": (["-m", "-i", "eth", "SW", "SW2", "--"], {}, "lo eth0 eth1", HOST),
    "-R": (["-R", "9.9.9.9,2620:fe::fe", "SW"], {}, "lo vde0", R),
    "-r": (["-r", "CONF", "SW"], {}, "lo vde0", CONF),
    "-R wins over -r": (["-R", "9.9.9.9,2620:fe::fe", "-r", "CONF", "SW"], {}, "lo vde0", R),
    "VDE_RESOLVADDR": (["SW"], {"VDE_RESOLVADDR": "9.9.8.8"}, "lo vde0", ENV),
    "VDE_RESOLVCONF": (["SW"], {"VDE_RESOLVCONF": "CONF"}, "lo vde0", CONF),
    "-R beats VDE_RESOLVADDR": (["-R", "9.9.9.9,2620:fe::fe", "SW"], {"VDE_RESOLVADDR": "9.9.8.8"},
                                "lo vde0", R),
    "VDE_RESOLVADDR wins over -r": (["-r", "CONF", "SW"], {"VDE_RESOLVADDR": "9.9.8.8"},
                                    "lo vde0", ENV),
}


@pytest.mark.parametrize("case", PARITY)
def test_the_command_sees_what_it_sees_under_vdens(case: str, vde_switch: str, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(CONF)
    args, env, links, resolv = PARITY[case]
    subst = {"SW": vde_switch, "CONF": str(conf)}
    if "SW2" in args:
        subst["SW2"] = request.getfixturevalue("another_switch")
    args = [subst.get(a, a) for a in args]
    env = {k: subst.get(v, v) for k, v in env.items()}

    theirs = observe(["vdens"], args, env, settle=True)
    ours = observe(PYVDENS, args, env)

    for key in ("links", "uid", "gid", "resolv", "CapInh", "CapAmb"):
        assert ours[key] == theirs[key], key
    assert ours["links"] == links + " "
    assert ours["resolv"] == (Path("/etc/resolv.conf").read_text() if resolv == HOST
                              else resolv).replace("\n", ";")
    assert ours["uid"] == str(os.getuid()) and ours["gid"] == str(os.getgid())
    assert int(ours["CapAmb"], 16) == DEFAULT_CAPS | (SYS_ADMIN if "-s" in args else 0)
    if os.getuid() != 0:
        assert ours["CapEff"] == theirs["CapEff"]
    else:  # vdens leaves root every capability in its namespace; we keep the set
        assert ours["CapEff"] == ours["CapAmb"] != theirs["CapEff"]
    # taps are left down, as vdens does; lo we bring up, vdens leaves it down
    assert ours["flags"].replace("<LOOPBACK,UP,LOWER_UP>", "<LOOPBACK>") == theirs["flags"]
    assert "lo=<LOOPBACK,UP,LOWER_UP>" in ours["flags"]


SERVER = r"""
import socket
s = socket.socket()
s.bind(("10.3.0.1", 7001))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
data = c.recv(100)
c.sendall(b"pong:" + data)
print("served", data.decode(), flush=True)
"""

CLIENT = r"""
import socket
c = socket.create_connection(("10.3.0.1", 7001), timeout=10)
c.sendall(b"from-vdens")
print("reply", c.recv(100).decode(), flush=True)
"""

UP = "ip addr add {} dev vde0 && ip link set vde0 up && {} -c \"$0\""


@pytest.mark.parametrize("how", ["switch URL", "=command"])
def test_vdens_and_pyvdens_namespaces_on_one_switch_reach_each_other(vde_switch: str,
                                                                     how: str) -> None:
    net = vde_switch if how == "switch URL" else f"=vde_plug {vde_switch}"
    server = subprocess.Popen(
        [*PYVDENS, net, "sh", "-c", UP.format("10.3.0.1/24", sys.executable), SERVER],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n"
        # vdens 0.2 loses the exit status: the client prints what it got
        client = subprocess.run(["vdens", vde_switch, "sh", "-c",
                                 UP.format("10.3.0.2/24", sys.executable) + "; " + SETTLE,
                                 CLIENT],
                                capture_output=True, text=True, timeout=60)
        assert client.stdout == "reply pong:from-vdens\n", client.stderr
        assert server.stdout.read() == "served from-vdens\n"
        assert server.wait(30) == 0
    finally:
        server.kill()
        server.wait()
    assert processes_with_arg(vde_switch) == []  # no vde_plug left behind


# -- DNS: the injected resolv.conf is what glibc uses ----------------------------------

DNS_SERVER = r"""
import socket
from dnslib import QTYPE, RR, A, DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.53", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    query = DNSRecord.parse(data)
    name, qtype = str(query.q.qname), QTYPE[query.q.qtype]
    reply = query.reply()
    if (name, qtype) == ("test.example.", "A"):
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=60))
    s.sendto(reply.pack(), peer)
    print("query", name, qtype, flush=True)
"""


def resolve(name: str) -> list[str]:
    return sorted({str(ai[4][0]) for ai in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)})


def host_view() -> dict[str, object]:
    st = os.stat("/etc/resolv.conf")
    with open("/etc/resolv.conf") as f, open("/proc/self/mountinfo") as m:
        return {"resolv.conf": (f.read(), st.st_ino, st.st_mtime_ns), "mountinfo": m.read()}


def mounts_of(source: str, mountinfo: str) -> list[str]:
    """Mount points of the mounts of `source` in a mountinfo(5) text."""
    return [line.split()[4] for line in mountinfo.splitlines()
            if line.split(" - ", 1)[1].split()[1] == source]


def test_glibc_inside_asks_the_injected_resolver_and_the_host_is_untouched() -> None:
    with Namespace() as dns:
        configure(dns, "10.0.0.53/24")
        server = dns.popen([sys.executable, "-c", DNS_SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n"
        host, tmp = host_view(), set(os.listdir("/tmp"))
        with Namespace(resolver="10.0.0.53") as ns:
            configure(ns, "10.0.0.2/24")
            assert ns.call(resolve, "test.example") == ["192.0.2.7"]
            assert ns.call(Path("/etc/resolv.conf").read_text) == "nameserver 10.0.0.53\n"
            # the tmpfs the file was written to is gone, inside too: only the file is left
            assert mounts_of("pytest-vdens", ns.call(Path("/proc/self/mountinfo").read_text)) \
                == ["/etc/resolv.conf"]
            assert host_view() == host
        dns.close()
        assert "query test.example. A" in server.stdout.read().splitlines()
    assert host_view() == host
    new = {n for n in set(os.listdir("/tmp")) - tmp if not n.startswith("pytest-")}
    assert new == set(), "a temporary file was left in /tmp"


# -- capabilities ----------------------------------------------------------------------

PROBE = r"""
import errno, socket

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, repr(e))

def bind_port_80():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 80))

def probe():
    with open("/proc/self/status") as f:
        caps = dict(line.split(":") for line in f if line.startswith("Cap"))
    return {
        "bind 80": attempt(bind_port_80),
        "AF_PACKET": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()),
        "raw ICMP": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                  socket.IPPROTO_ICMP).close()),
        "CapEff": int(caps["CapEff"], 16),
        "CapAmb": int(caps["CapAmb"], 16),
    }
"""
EXEC_PROBE = [sys.executable, "-c", PROBE + "import json; print(json.dumps(probe()))"]

ALLOWED = {"bind 80": "ok", "AF_PACKET": "ok", "raw ICMP": "ok",
           "CapEff": DEFAULT_CAPS, "CapAmb": DEFAULT_CAPS}
DROPPED = {"bind 80": "EACCES", "AF_PACKET": "EPERM", "raw ICMP": "EPERM", "CapEff": 0, "CapAmb": 0}


def probe() -> dict[str, object]:
    scope: dict[str, object] = {}
    exec(PROBE, scope)
    return scope["probe"]()  # type: ignore[operator,no-any-return]


def exec_probe(run: subprocess.CompletedProcess[str]) -> dict[str, object]:
    import json

    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_default_capabilities_let_code_and_programs_bind_port_80_and_use_raw_sockets() -> None:
    with Namespace("-") as ns:
        assert ns.call(probe) == ALLOWED
        assert exec_probe(ns.run(EXEC_PROBE, capture_output=True, text=True)) == ALLOWED
    assert exec_probe(subprocess.run([*PYVDENS, "-", *EXEC_PROBE], capture_output=True,
                                     text=True, timeout=60)) == ALLOWED


def test_dropped_capabilities_are_really_gone() -> None:
    with Namespace("-") as ns:
        assert exec_probe(ns.run(EXEC_PROBE, caps=[], capture_output=True, text=True)) == DROPPED
        assert ns.call(probe) == ALLOWED  # the namespace keeps its set for the next ones
        ns.drop_caps()
        assert ns.call(probe) == DROPPED
        assert exec_probe(ns.run(EXEC_PROBE, capture_output=True, text=True)) == DROPPED
    assert exec_probe(subprocess.run([*PYVDENS, "--drop-caps", "-", *EXEC_PROBE],
                                     capture_output=True, text=True, timeout=60)) == DROPPED


# -- the host's network namespace is out of reach -------------------------------------

CLONE_NEWNET = 0x40000000


def try_to_enter(host_pid: int, host_net_fd: int) -> dict[str, str]:
    """From inside: reach the host's network namespace by its path, and by an fd of it."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = {}
    try:
        os.close(os.open(f"/proc/{host_pid}/ns/net", os.O_RDONLY))
        result["open by path"] = "ok"
    except OSError as e:
        result["open by path"] = errno.errorcode.get(e.errno or 0, repr(e))
    ok = libc.setns(host_net_fd, CLONE_NEWNET) == 0
    result["setns"] = "ok" if ok else errno.errorcode[ctypes.get_errno()]
    here, host = os.readlink("/proc/self/ns/net"), os.readlink(f"/proc/self/fd/{host_net_fd}")
    result["still inside"] = str(here != host)
    return result


@pytest.mark.parametrize("sysadm", [False, True], ids=["default caps", "sysadm"])
def test_code_inside_cannot_enter_the_host_network_namespace(sysadm: bool) -> None:
    host_net = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        with Namespace("-", sysadm=sysadm) as ns:
            seen = ns.call(try_to_enter, os.getpid(), host_net)
    finally:
        os.close(host_net)
    assert seen["open by path"] in ("EACCES", "EPERM")
    assert seen["setns"] == "EPERM"
    assert seen["still inside"] == "True"


IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def write_sysctl(value: str) -> str:
    try:
        with open(IP_FORWARD, "w") as f:
            f.write(value)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, repr(e))
    return Path(IP_FORWARD).read_text().strip()


def test_a_sysctl_written_inside_is_the_namespaces_own_never_the_hosts() -> None:
    host = Path(IP_FORWARD).read_text().strip()
    flipped = "0" if host == "1" else "1"
    with Namespace("-") as ns:
        assert ns.call(write_sysctl, flipped) == flipped  # its own copy
        assert Path(IP_FORWARD).read_text().strip() == host
        ns.drop_caps()
        assert ns.call(write_sysctl, host) in ("EACCES", "EPERM")
    assert Path(IP_FORWARD).read_text().strip() == host
