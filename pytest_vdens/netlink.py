"""The few rtnetlink requests the helper sends, encoded by hand.

The helper stays free of pyroute2 (it would double the cost of every fork);
tests/test_netlink.py decodes each message with pyroute2 to check it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys

RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
_REQUEST, _ACK, _EXCL, _CREATE = 0x1, 0x4, 0x200, 0x400
_IFF_UP = 0x1
_IFLA_ADDRESS = 1
_IFA_ADDRESS, _IFA_LOCAL, _IFA_FLAGS = 1, 2, 8
_IFA_F_NODAD = 0x2
_RTA_OIF, _RTA_GATEWAY = 4, 5
_RT_TABLE_MAIN, _RTPROT_BOOT, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 3, 0, 1

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, _REQUEST | _ACK | flags, 1, 0) + body


def link_up(index: int, mac: bytes | None = None, up: bool = True) -> bytes:
    """Bring interface `index` up (or leave its state, up=False), setting its MAC if given."""
    flags = _IFF_UP if up else 0
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, flags)
    if mac is not None:
        body += _attr(_IFLA_ADDRESS, mac)
    return _message(RTM_NEWLINK, 0, body)


def add_address(index: int, iface: Interface) -> bytes:
    """Add an address; IPv6 ones skip duplicate detection, so they work at once."""
    family = socket.AF_INET6 if iface.version == 6 else socket.AF_INET
    flags = _IFA_F_NODAD if iface.version == 6 else 0
    body = struct.pack("=BBBBI", family, iface.network.prefixlen, flags, 0, index)
    packed = iface.ip.packed
    body += _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
    body += _attr(_IFA_FLAGS, struct.pack("=I", flags))
    return _message(RTM_NEWADDR, _CREATE | _EXCL, body)


def add_default_route(index: int, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    family = socket.AF_INET6 if gateway.version == 6 else socket.AF_INET
    body = struct.pack("=BBBBBBBBI", family, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT,
                       _RT_SCOPE_UNIVERSE, _RTN_UNICAST, 0)
    body += _attr(_RTA_GATEWAY, gateway.packed) + _attr(_RTA_OIF, struct.pack("=i", index))
    return _message(RTM_NEWROUTE, _CREATE | _EXCL, body)


def request(fd: int, message: bytes) -> None:
    """Send one request on netlink socket `fd` and wait for its acknowledgement."""
    os.write(fd, message)
    while True:
        reply = os.read(fd, 8192)
        kind = struct.unpack_from("=H", reply, 4)[0]
        if kind == 2:  # NLMSG_ERROR; 0 is the ACK
            err = int.from_bytes(reply[16:20], sys.byteorder, signed=True)
            if err:
                raise OSError(-err, os.strerror(-err))
            return
