"""Addresses that just work: static and "auto" addresses, MACs, slirp's defaults."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from pytest_vdens import ArgumentError, Namespace, Switch

from .conftest import alive


def test_auto_gives_unique_working_addresses_v4_and_v6() -> None:
    with Namespace(addr="auto") as a, Namespace(addr="auto") as b:
        assert a.ip() != b.ip() and a.ip(version=6) != b.ip(version=6)
        assert a.addresses["vde0"][0].endswith("/24") and a.addresses["vde0"][1].endswith("/64")
        for target in (b.ip(), b.ip(version=6)):
            assert a.run(["ping", "-c", "1", "-W", "5", target]).returncode == 0


def test_static_addresses_and_macs() -> None:
    with Namespace(addr=[["10.30.0.1/24", "fd00:30::1/64"]], mac="02:00:00:00:30:01") as a, \
            Namespace(addr="10.30.0.2/24") as b:
        link = a.run(["ip", "-br", "link", "show", "vde0"], capture_output=True, text=True).stdout
        assert "02:00:00:00:30:01" in link and "UP" in link
        assert b.run(["ping", "-c", "1", "-W", "5", "10.30.0.1"]).returncode == 0
        assert a.ip(version=6) == "fd00:30::1"
        with pytest.raises(ArgumentError, match="has no IPv6 address"):
            b.ip(version=6)


def test_each_interface_of_a_two_network_host_gets_its_own_subnet() -> None:
    with Switch() as lan1, Switch() as lan2, Namespace([lan1.url, lan2.url], addr="auto") as host:
        v4 = [host.ip(i) for i in host.interfaces]
        assert v4[0].rsplit(".", 1)[0] != v4[1].rsplit(".", 1)[0]


def test_switches_made_after_others_closed_still_get_subnets_of_their_own() -> None:
    # the helper forgets a closed switch's network: that must not hand its subnet out twice
    with Switch() as kept:
        for _ in range(3):
            Switch().close()
        with Switch() as new, Namespace([kept.url], addr="auto") as a, \
                Namespace([new.url], addr="auto") as b:
            assert a.ip().rsplit(".", 1)[0] != b.ip().rsplit(".", 1)[0]
            assert a.ip(version=6).split("::")[0] != b.ip(version=6).split("::")[0]


@pytest.mark.parametrize("addr, words", [
    ("10.0.0.300/24", ["10.0.0.300/24", "CIDR"]),
    ("10.0.0.1", ["no prefix length"]),
    (["10.0.0.1/24", "10.0.0.2/24"], ["one CIDR per interface (1 here)"]),
    ([["nope/24"]], ["'nope/24'"]),
])
def test_malformed_addresses_are_named(addr: object, words: list[str]) -> None:
    with pytest.raises(ArgumentError) as info:
        Namespace(addr=addr)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_overlapping_static_addresses_on_one_network_are_refused() -> None:
    with Switch() as lan, Namespace([lan.url], addr="10.31.0.1/24"):
        with pytest.raises(ArgumentError, match="10.31.0.1/24 is already used on .* by namespace"):
            Namespace([lan.url], addr="10.31.0.1/24")
        with Namespace([lan.url], addr="10.31.0.2/24"):  # the failed one left nothing claimed
            pass
    with Switch() as other, Namespace([other.url], addr="10.31.0.1/24"):
        pass  # another network: no conflict


def test_auto_runs_out_of_addresses_with_a_clear_error() -> None:
    with Switch() as lan:
        with Namespace([lan.url] * 200, iface="h", addr="auto") as big, \
                Namespace([lan.url] * 53, iface="h", addr="auto") as rest:
            ips = {ns.ip(i) for ns in (big, rest) for i in ns.interfaces}
            assert len(ips) == 253
            with pytest.raises(ArgumentError, match="no address left"):
                Namespace([lan.url], addr="auto")
        with Namespace([lan.url], addr="auto"):  # freed with the namespaces
            pass


def test_slirp_auto_is_the_namespace_with_outside_access_one_liner() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].sendall(b"outside"), daemon=True).start()
    with Namespace(["slirp://"], addr="auto") as ns:
        assert ns.addresses == {"vde0": ("10.0.2.15/24",)}
        assert ns.run(["cat", "/etc/resolv.conf"], capture_output=True,
                      text=True).stdout == "nameserver 10.0.2.3\n"

        def fetch() -> bytes:
            with socket.create_connection(("10.0.2.2", port), timeout=10) as s:
                return s.recv(100)

        assert ns.call(fetch) == b"outside"
    server.close()


HOLD = textwrap.dedent("""
    import sys
    from pytest_vdens import Namespace
    with Namespace([sys.argv[1]], addr="auto") as ns:
        print(ns.ip(), flush=True)
        sys.stdin.read()
""")


def test_auto_on_a_shared_switch_does_not_collide_across_processes(vde_switch: str) -> None:
    workers = [subprocess.Popen([sys.executable, "-c", HOLD, vde_switch], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    addresses = [w.stdout.readline().strip() for w in workers]  # type: ignore[union-attr]
    assert len(set(addresses)) == 3 and all(addresses)
    for w in workers:
        w.communicate("")
    leases = os.path.join(tempfile.gettempdir(), f"vdens-leases-{os.geteuid()}")
    assert not os.path.exists(leases)


def test_a_killed_holder_s_addresses_are_taken_over(vde_switch: str) -> None:
    first = subprocess.Popen([sys.executable, "-c", HOLD, vde_switch], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    taken = first.stdout.readline().strip()  # type: ignore[union-attr]
    helper = int(subprocess.run(["pgrep", "-P", str(first.pid), "-f", "pytest_vdens.helper"],
                                capture_output=True, text=True).stdout.split()[0])
    first.kill()
    first.wait()
    deadline = time.monotonic() + 5
    while alive(helper) and time.monotonic() < deadline:
        time.sleep(0.02)
    with Namespace([vde_switch], addr="auto") as ns:
        assert ns.ip() == taken


def test_fifty_hosts_on_one_switch_all_reach_each_other() -> None:
    # Every pair by broadcast: unicast to all 49 x 50 pairs at once would need
    # more ARP entries than the kernel's table, shared by all network
    # namespaces, holds (net.ipv4.neigh.default.gc_thresh3, 1024).
    with Switch() as lan:
        hosts = [Namespace([lan.url], addr="auto") for _ in range(50)]
        try:
            broadcast = hosts[0].addresses["vde0"][0]
            broadcast = str(ipaddress.ip_interface(broadcast).network.broadcast_address)
            socks = [h.socket(socket.AF_INET, socket.SOCK_DGRAM) for h in hosts]
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.bind(("", 9))
                s.setblocking(False)
            heard: list[set[int]] = [set() for _ in hosts]
            deadline = time.monotonic() + 30
            while any(len(h) < 49 for h in heard) and time.monotonic() < deadline:
                for i, s in enumerate(socks):
                    if any(i not in heard[j] for j in range(50) if j != i):
                        s.sendto(str(i).encode(), (broadcast, 9))
                time.sleep(0.1)
                for j, s in enumerate(socks):
                    try:
                        while True:
                            heard[j].add(int(s.recv(16)))
                    except BlockingIOError:
                        pass
            for j in range(50):
                heard[j].discard(j)
                assert heard[j] == set(range(50)) - {j}, f"host {j} did not hear from all"
            # and unicast around the ring, through ARP and the switch's MAC table
            for i, s in enumerate(socks):
                s.sendto(b"ring", (hosts[(i + 1) % 50].ip(), 9))
            time.sleep(0.5)
            for s in socks:
                s.setblocking(True)
                s.settimeout(10)
                while s.recv(16) != b"ring":
                    pass
                s.close()
        finally:
            for h in hosts:
                h.close()
