"""Least privilege: what code does with fewer capabilities."""

import socket

import pytest

from pytest_vdens import drop_caps


@pytest.mark.vdens(nets="-", caps=[])
def test_without_capabilities_port_80_is_refused():
    with pytest.raises(PermissionError):
        socket.create_server(("127.0.0.1", 80))
    socket.create_server(("127.0.0.1", 8080)).close()  # high ports need nothing


@pytest.mark.vdens(nets="-", caps=["net_bind_service"])
def test_only_what_the_service_needs():
    socket.create_server(("127.0.0.1", 80)).close()
    with pytest.raises(PermissionError):  # no NET_RAW: no raw sockets
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


@pytest.mark.vdens(nets="-")
def test_a_service_that_drops_privileges_after_binding():
    server = socket.create_server(("127.0.0.1", 80))  # bound while privileged...
    drop_caps()  # ...then every capability is gone, for good
    with pytest.raises(PermissionError):
        socket.create_server(("127.0.0.1", 81))
    with socket.create_connection(("127.0.0.1", 80)):  # the bound socket still serves
        server.accept()[0].close()
    server.close()


def test_a_command_without_capabilities(vdens_ns):
    denied = vdens_ns.run(["ip", "link", "set", "lo", "down"], caps=[], capture_output=True)
    assert denied.returncode != 0  # Operation not permitted
    vdens_ns.run(["ip", "link", "set", "lo", "down"], check=True)  # default caps: allowed
