"""The tutorial's tests: port 80 without root, then two hosts on one network."""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


@pytest.mark.vdens
def test_port_80_without_root():
    # This test runs inside a network namespace of its own: port 80 is free.
    with socket.create_server(("127.0.0.1", 80)) as server:
        with socket.create_connection(("127.0.0.1", 80)) as client:
            conn, _ = server.accept()
            client.sendall(b"hello")
            assert conn.recv(5) == b"hello"


def up(ns, cidr):
    """Give the namespace's interface an address and bring it up."""
    ns.run(["ip", "addr", "add", cidr, "dev", "vde0"], check=True)
    ns.run(["ip", "link", "set", "vde0", "up"], check=True)


def test_two_hosts_ping(make_vdens_ns):
    alice, bob = make_vdens_ns(), make_vdens_ns()  # both on this test's switch
    up(alice, "10.0.0.1/24")
    up(bob, "10.0.0.2/24")
    assert alice.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0


def fetch(url):
    """GET url, waiting for the server to come up."""
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()
        except urllib.error.URLError:
            time.sleep(0.05)
    raise TimeoutError(url)


def test_a_web_server_and_its_client(make_vdens_ns, tmp_path):
    server, client = make_vdens_ns(), make_vdens_ns()
    up(server, "10.0.0.80/24")
    up(client, "10.0.0.2/24")
    (tmp_path / "index.html").write_text("hello from 10.0.0.80\n")
    server.popen([sys.executable, "-m", "http.server", "80", "--bind", "10.0.0.80"],
                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # fetch() runs in a child process inside the client namespace
    assert client.call(fetch, "http://10.0.0.80/index.html") == "hello from 10.0.0.80\n"
