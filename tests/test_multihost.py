"""Driving namespaces from the test process: sockets made inside, pyroute2 from outside."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

from pytest_vdens import Namespace

from .conftest import configure, start_echo_server


def up_with_pyroute2(ns: Namespace, address: str, prefixlen: int) -> None:
    with ns.iproute() as ipr:
        index = ipr.link_lookup(ifname="vde0")[0]
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")


def test_pyroute2_from_outside_configures_a_namespace_without_root() -> None:
    with Namespace() as a, Namespace() as b:
        up_with_pyroute2(a, "10.20.0.1", 24)
        up_with_pyroute2(b, "10.20.0.2", 24)
        with a.iproute() as ipr:
            addrs = {x.get_attr("IFA_ADDRESS") for x in ipr.get_addr(family=socket.AF_INET)}
            assert addrs == {"127.0.0.1", "10.20.0.1"}
        assert a.run(["ping", "-c", "1", "-W", "5", "10.20.0.2"]).returncode == 0
    # and none of it touched this process's own network
    assert "10.20.0.1" not in open("/proc/net/fib_trie").read()


def test_an_asyncio_client_here_talks_to_a_server_inside() -> None:
    with Namespace() as server, Namespace() as client:
        configure(server, "10.21.0.1/24")
        configure(client, "10.21.0.2/24")
        start_echo_server(server, "10.21.0.1", 7777)

        async def talk() -> bytes:
            reader, writer = await asyncio.open_connection(
                sock=client.connect(("10.21.0.1", 7777), timeout=10))
            writer.write(b"hello from asyncio")
            await writer.drain()
            data = await reader.readexactly(18)
            writer.close()
            await writer.wait_closed()
            return data

        assert asyncio.run(talk()) == b"hello from asyncio"


def test_a_listening_socket_inside_serves_a_thread_here() -> None:
    with Namespace() as server, Namespace() as client:
        configure(server, "fd00:22::1/64")
        configure(client, "fd00:22::2/64")
        listener = server.listen(("fd00:22::1", 80))  # a privileged port, no root

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        t = threading.Thread(target=serve)
        t.start()

        def ask() -> bytes:
            with socket.create_connection(("fd00:22::1", 80), timeout=10) as s:
                s.sendall(b"quiet")
                return s.recv(100)

        assert client.call(ask) == b"QUIET"
        t.join()
        listener.close()


def test_a_socket_keeps_the_namespace_it_was_made_in() -> None:
    with Namespace("-") as ns:
        udp = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        # our own loopback does not reach it; the namespace's does
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here:
            here.sendto(b"lost", ("127.0.0.1", port))

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"found", ("127.0.0.1", port))

        ns.call(send)
        udp.settimeout(5)
        assert udp.recv(100) == b"found"
        udp.close()
        assert os.readlink("/proc/self/ns/net") != ns.run(
            ["readlink", "/proc/self/ns/net"], capture_output=True, text=True).stdout.strip()
