"""Two LANs joined by a router: three namespaces, two switches."""

from collections.abc import Iterator

import pytest

from pytest_vdens import Switch


@pytest.fixture
def lan2() -> Iterator[str]:
    """A second LAN: another embedded switch (the test's own is vdens_switch)."""
    with Switch() as switch:
        yield switch.url


def up(ns, dev, cidr):
    ns.run(["ip", "addr", "add", cidr, "dev", dev], check=True)
    ns.run(["ip", "link", "set", dev, "up"], check=True)


def test_a_router_forwards_between_two_lans(make_vdens_ns, vdens_switch, lan2):
    router = make_vdens_ns(nets=[vdens_switch, lan2])  # vde0 on LAN 1, vde1 on LAN 2
    up(router, "vde0", "10.0.1.1/24")
    up(router, "vde1", "10.0.2.1/24")
    router.run(["sysctl", "-w", "net.ipv4.ip_forward=1"], check=True)

    alice = make_vdens_ns(nets=[vdens_switch])
    up(alice, "vde0", "10.0.1.10/24")
    alice.run(["ip", "route", "add", "default", "via", "10.0.1.1"], check=True)

    bob = make_vdens_ns(nets=[lan2])
    up(bob, "vde0", "10.0.2.20/24")
    bob.run(["ip", "route", "add", "default", "via", "10.0.2.1"], check=True)

    ping = alice.run(["ping", "-c", "1", "-W", "5", "10.0.2.20"], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout
    assert "ttl=63" in ping.stdout  # one hop: the router decremented it

