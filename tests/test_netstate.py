"""The network state gathered inside a namespace for failure reports shows what is there."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator

import pytest

from pytest_vdens import Namespace, Switch, netstate

B_MAC = "02:00:00:00:0b:02"


def section(text: str, title: str) -> list[str]:
    """The lines of one section of gather()'s text, without their indentation."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(f"{title}:")
    rest = lines[start + 1:]
    end = next((i for i, line in enumerate(rest) if re.fullmatch(r"\w+:( .*)?", line)),
               len(rest))
    return rest[:end]


def has_line(lines: list[str], pattern: str) -> bool:
    return any(re.fullmatch(pattern, line) for line in lines)


@pytest.fixture
def hosts() -> Iterator[tuple[Namespace, Namespace]]:
    """A and B on a switch of their own; B with a known MAC."""
    with Switch() as sw, \
            Namespace([sw.url], addr=[["10.9.0.1/24", "fd00:9::1/64"]]) as a, \
            Namespace([sw.url], addr=[["10.9.0.2/24", "fd00:9::2/64"]], mac=B_MAC) as b:
        yield a, b


def test_it_shows_links_addresses_routes_neighbours_and_sockets(
        hosts: tuple[Namespace, Namespace]) -> None:
    a, b = hosts
    with a.iproute() as ipr:
        ipr.route("add", dst="10.77.0.0/16", gateway="10.9.0.2", priority=7)
    assert a.run(["ping", "-c", "1", "-W", "5", "10.9.0.2"],
                 capture_output=True).returncode == 0
    with a.listen(("10.9.0.1", 8080)), a.listen(("fd00:9::1", 8081)), \
            a.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            a.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp6, \
            b.connect(("10.9.0.1", 8080), timeout=10) as conn:
        udp.bind(("0.0.0.0", 5353))
        udp6.bind(("fd00:9::1", 5353))
        text = a.call(netstate.gather)
        client = "10.9.0.2:%d" % conn.getsockname()[1]

    links = section(text, "links")
    vde0 = next(line for line in links if line.startswith("vde0 "))
    assert re.match(r"vde0\s+#\d+\s+UP,LOWER_UP\s+\S+\s+mtu 1500\s+[0-9a-f:]{17}\s+carrier on", vde0)
    rx, tx = (tuple(map(int, m)) for m in
              re.findall(r"[rt]x (\d+) pkt (\d+) B (\d+) drop", vde0))
    assert rx[0] > 0 and rx[1] > 0 and tx[0] > 0 and tx[1] > 0, vde0
    assert has_line(links, r"lo\s+#1\s+UP,LOWER_UP\s.*")

    addresses = section(text, "addresses")
    assert has_line(addresses, r"lo\s+inet\s+127\.0\.0\.1/8")
    assert has_line(addresses, r"vde0\s+inet\s+10\.9\.0\.1/24")
    assert has_line(addresses, r"vde0\s+inet6\s+fd00:9::1/64\s+nodad")

    routes = section(text, "routes")
    assert has_line(routes, r"10\.77\.0\.0/16\s+via 10\.9\.0\.2\s+dev vde0\s+metric 7")
    assert has_line(routes, r"10\.9\.0\.0/24\s+dev vde0")
    assert has_line(routes, r"fd00:9::/64\s+dev vde0\s+metric \d+")
    assert not any("fe80::" in r or "127.0.0." in r for r in routes)  # no local table

    neighbours = section(text, "neighbours")
    assert has_line(neighbours, rf"10\.9\.0\.2\s+dev vde0\s+lladdr {B_MAC}\s+REACHABLE")

    listening = section(text, "listening")
    assert has_line(listening, r"tcp\s+10\.9\.0\.1:8080\s+recv-q 1")  # B's, not accepted
    assert has_line(listening, r"tcp6\s+\[fd00:9::1\]:8081")
    assert has_line(listening, r"udp\s+0\.0\.0\.0:5353")
    assert has_line(listening, r"udp6\s+\[fd00:9::1\]:5353")

    connections = section(text, "connections")
    assert has_line(connections, rf"tcp\s+10\.9\.0\.1:8080\s+-> {client}\s+ESTABLISHED")


def test_a_neighbour_that_never_answers_is_shown_incomplete(
        hosts: tuple[Namespace, Namespace]) -> None:
    a, _ = hosts
    with a.socket() as s:
        s.setblocking(False)
        s.connect_ex(("10.9.0.99", 80))  # nobody there
        text = a.call(netstate.gather)
    assert has_line(section(text, "neighbours"), r"10\.9\.0\.99\s+dev vde0\s+lladdr -\s+INCOMPLETE")
    assert has_line(section(text, "connections"), r"tcp\s+10\.9\.0\.1:\d+\s+-> 10\.9\.0\.99:80\s+SYN-SENT.*")


@pytest.mark.parametrize("mounts", [False, True], ids=["net", "net+mnt"])
def test_it_shows_the_namespace_not_this_process(mounts: bool) -> None:
    """/proc/net follows the reader's network namespace, even on this process's /proc mount."""
    with socket.create_server(("127.0.0.1", 0)) as mine, \
            Namespace(addr=["10.9.1.1/24"], resolver="10.0.0.53" if mounts else None) as ns, \
            ns.listen(("127.0.0.1", 0)) as theirs:
        text = ns.call(netstate.gather)
        outside = netstate.gather()
        mine_at = "127.0.0.1:%d" % mine.getsockname()[1]
        theirs_at = "127.0.0.1:%d" % theirs.getsockname()[1]
    names = [line.split()[0] for line in section(text, "links")]
    assert names == ["lo", "vde0"]
    assert [line.split()[2] for line in section(text, "addresses")
            if " inet " in f" {line} "] == ["127.0.0.1/8", "10.9.1.1/24"]
    assert has_line(section(text, "listening"), rf"tcp\s+{re.escape(theirs_at)}")
    assert mine_at not in text
    assert theirs_at not in outside and "10.9.1.1/24" not in outside


def test_a_part_that_fails_is_one_line_and_the_rest_is_still_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyroute2", None)  # import fails

    def unreadable(kind: str) -> list[list[str]]:
        if kind == "tcp":
            raise PermissionError(13, "Permission denied")
        if kind == "udp":
            return [["0:", "garbage"]]
        return []

    monkeypatch.setattr(netstate, "_proc_sockets", unreadable)
    lines = netstate.gather(indent="").splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "links", "addresses", "routes", "neighbours"]
    for what, line in zip(("links", "addresses", "routes", "neighbours"), lines):
        assert line.startswith(f"{what}: (could not read {what}: ModuleNotFoundError: "), line
    assert lines[4:6] == [
        "listening:",
        "  (could not read /proc/net/tcp: PermissionError: [Errno 13] Permission denied)"]
    assert lines[6].startswith("  (could not read a line of /proc/net/udp: ValueError: ")
    assert len(lines) == 7


def test_addresses_from_proc_net_are_decoded_in_host_byte_order() -> None:
    def word(b: bytes) -> str:  # how the kernel prints a 32-bit word of an address: %08X
        return "%08X" % int.from_bytes(b, sys.byteorder)

    v4 = socket.inet_pton(socket.AF_INET, "10.9.0.1")
    v6 = socket.inet_pton(socket.AF_INET6, "fd00:9::1:2")
    assert netstate._address(word(v4) + ":1F90") == "10.9.0.1:8080"
    assert netstate._address("".join(word(v6[i:i + 4]) for i in range(0, 16, 4)) + ":0050") \
        == "[fd00:9::1:2]:80"
