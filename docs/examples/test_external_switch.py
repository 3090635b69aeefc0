"""Tests on a switch started outside pytest.

    vde_switch -d -s /tmp/lab
    pytest --vdens-switch vde:///tmp/lab test_external_switch.py
"""

import pytest


def up(ns, cidr):
    ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
    ns.run(["ip", "link", "set", "vde0", "up"], check=True)


def test_namespaces_join_the_given_switch(make_vdens_ns, vdens_switch):
    alice, bob = make_vdens_ns(), make_vdens_ns()
    assert alice.nets == bob.nets == (vdens_switch,)
    up(alice, "10.0.0.1/24")
    up(bob, "10.0.0.2/24")
    assert alice.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0


@pytest.mark.vdens
def test_a_marked_test_is_plugged_in_too(vdens_ns, vdens_switch):
    assert vdens_ns.interfaces == ("vde0",)
    assert vdens_ns.nets == (vdens_switch,)
