"""Demo: two private network stacks talk over the embedded VDE switch.

No root, no daemon started by hand: each Namespace is a user+network
namespace whose vde0 is plugged into this process's own switch.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

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


def test_a_web_server_on_port_80_without_root() -> None:
    with Namespace() as server, Namespace() as client:
        up(server, "10.0.0.80/24")
        up(client, "10.0.0.2/24")
        httpd = server.popen([sys.executable, "-m", "http.server", "80", "--bind", "10.0.0.80"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")

        def get() -> str:
            for _ in range(100):
                try:
                    with socket.create_connection(("10.0.0.80", 80), timeout=5) as s:
                        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        return s.makefile("rb").read().decode()
                except ConnectionRefusedError:
                    time.sleep(0.05)
            raise TimeoutError("http.server did not start")

        reply = client.call(get)
        print(f"\nclient got: {reply.splitlines()[0]}")
        assert reply.startswith("HTTP/1.0 200")
        assert httpd.poll() is None  # still serving; killed when `server` closes
