"""The helper's hand-encoded rtnetlink requests mean what pyroute2 says they mean."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pytest_vdens import netlink


def decode(cls: type, data: bytes) -> dict:  # type: ignore[type-arg]
    msg = cls(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg  # type: ignore[no-any-return]


def test_link_up_and_mac() -> None:
    msg = decode(ifinfmsg, netlink.link_up(3, bytes.fromhex("020000000001")))
    assert msg["header"]["type"] == netlink.RTM_NEWLINK
    assert (msg["index"], msg["flags"] & 1, msg["change"] & 1) == (3, 1, 1)
    assert msg.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:01"


def test_the_lo_up_message_is_what_pyroute2_encodes() -> None:
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_NEWLINK

    msg = ifinfmsg()
    msg["index"] = 1
    msg["flags"] = msg["change"] = 1  # IFF_UP
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = 1
    msg.encode()
    assert bytes(msg.data) == netlink.link_up(1)


def test_addresses() -> None:
    v4 = decode(ifaddrmsg, netlink.add_address(2, ipaddress.ip_interface("10.1.2.3/24")))
    assert (v4["family"], v4["prefixlen"], v4["index"]) == (socket.AF_INET, 24, 2)
    assert v4.get_attr("IFA_LOCAL") == v4.get_attr("IFA_ADDRESS") == "10.1.2.3"
    v6 = decode(ifaddrmsg, netlink.add_address(2, ipaddress.ip_interface("fd00::7/64")))
    assert (v6["family"], v6["prefixlen"], v6.get_attr("IFA_ADDRESS")) == (socket.AF_INET6, 64, "fd00::7")
    assert v6.get_attr("IFA_FLAGS") & 0x2  # nodad: usable at once


def test_default_route() -> None:
    msg = decode(rtmsg, netlink.add_default_route(2, ipaddress.ip_address("10.0.2.2")))
    assert (msg["dst_len"], msg["table"], msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")) == (
        0, 254, "10.0.2.2", 2)


def test_a_mac_alone_leaves_the_link_state() -> None:
    msg = decode(ifinfmsg, netlink.link_up(2, bytes.fromhex("020000000002"), up=False))
    assert (msg["flags"], msg["change"]) == (0, 0)
    assert msg.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:02"
