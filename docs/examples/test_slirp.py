"""slirp://: a namespace whose network is the host's, through user-mode NAT."""

import socket
import subprocess
import sys
import threading

import pytest


@pytest.fixture(scope="session")
def host_service():
    """A TCP service on this machine's loopback. Session-scoped: it runs in pytest's
    own process, outside every namespace."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed
                return
            with conn:
                conn.sendall(b"hello from the host\n")

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


SLIRP_SETUP = [
    ["ip", "addr", "add", "10.0.2.15/24", "dev", "vde0"],
    ["ip", "link", "set", "vde0", "up"],
    ["ip", "route", "add", "default", "via", "10.0.2.2"],
]


@pytest.mark.vdens(nets=["slirp://"])
def test_the_host_is_10_0_2_2(host_service):
    for command in SLIRP_SETUP:
        subprocess.run(command, check=True)
    # slirp forwards 10.0.2.2 to the host's 127.0.0.1
    with socket.create_connection(("10.0.2.2", host_service), timeout=5) as conn:
        assert conn.makefile("rb").readline() == b"hello from the host\n"


def test_a_namespace_on_slirp_from_outside(make_vdens_ns, host_service):
    ns = make_vdens_ns(nets=["slirp://"], resolver="10.0.2.3")  # slirp's DNS forwarder
    for command in SLIRP_SETUP:
        ns.run(command, check=True)
    reply = ns.run([sys.executable, "-c", f"""
import socket
print(socket.create_connection(("10.0.2.2", {host_service}), timeout=5).recv(100).decode())
"""], capture_output=True, text=True, check=True)
    assert reply.stdout.startswith("hello from the host")
