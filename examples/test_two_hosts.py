"""Demo: two private network stacks talk over the embedded VDE switch.

No root, no daemon started by hand: each Namespace is a user+network
namespace whose vde0 is plugged into this process's own switch.
"""

from __future__ import annotations

from pytest_vdens import Namespace


def up(ns: Namespace, cidr: str) -> None:
    ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
    ns.run(["ip", "link", "set", "vde0", "up"], check=True)


def test_ping_between_two_hosts() -> None:
    with Namespace() as alice, Namespace() as bob:
        up(alice, "10.0.0.1/24")
        up(bob, "10.0.0.2/24")
        print(f"\nalice: {alice}\nbob:   {bob}")
        out = alice.run(["ping", "-c", "3", "-i", "0.2", "10.0.0.2"], capture_output=True, text=True)
        print(out.stdout)
        assert out.returncode == 0
