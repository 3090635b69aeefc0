"""Demo: what a user writes with the plugin. No root, nothing started by hand."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest


@pytest.fixture
def echo_server():
    # Function-scoped, so in a marked test it runs inside the test's namespace.
    with socket.create_server(("127.0.0.1", 80)) as server:
        yield server


@pytest.mark.vdens
def test_a_marked_test_owns_port_80(echo_server):
    with socket.create_connection(("127.0.0.1", 80)) as client:
        conn, _ = echo_server.accept()
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"


def test_two_hosts_talk_http(make_vdens_ns):
    web, browser = make_vdens_ns(), make_vdens_ns()
    for ns, cidr in ((web, "10.0.0.80/24"), (browser, "10.0.0.2/24")):
        ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
        ns.run(["ip", "link", "set", "vde0", "up"], check=True)
    web.popen([sys.executable, "-m", "http.server", "80", "--bind", "10.0.0.80"],
              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get() -> str:
        for _ in range(200):
            try:
                with socket.create_connection(("10.0.0.80", 80), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return s.makefile("rb").read().decode()
            except ConnectionRefusedError:
                time.sleep(0.05)
        raise TimeoutError("http.server did not start")

    reply = browser.call(get)
    print(f"\nbrowser got: {reply.splitlines()[0]}")
    assert reply.startswith("HTTP/1.0 200")


@pytest.mark.vdens(nets="-", resolver="10.0.0.53,fd00::53")
def test_an_injected_resolver():
    with open("/etc/resolv.conf") as f:
        assert f.read() == "nameserver 10.0.0.53\nnameserver fd00::53\n"
