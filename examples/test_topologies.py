"""Ready-made topologies: routed LANs, a two-network host, clients and a server, a bad link."""

from __future__ import annotations

import re
import socket
import threading


def test_two_lans_joined_by_a_router(make_vdens_ns, make_vdens_net):
    lan1, lan2 = make_vdens_net(), make_vdens_net()
    router = make_vdens_ns(nets=[lan1, lan2], addr=["10.1.0.1/24", "10.2.0.1/24"])
    router.call(lambda: open("/proc/sys/net/ipv4/ip_forward", "w").write("1"))
    h1 = make_vdens_ns(nets=[lan1], addr="10.1.0.10/24")
    h2 = make_vdens_ns(nets=[lan2], addr="10.2.0.10/24")
    h1.run(["ip", "route", "add", "default", "via", "10.1.0.1"], check=True)
    h2.run(["ip", "route", "add", "default", "via", "10.2.0.1"], check=True)
    trace = h1.run(["ping", "-c", "1", "-W", "5", "10.2.0.10"], capture_output=True, text=True)
    assert trace.returncode == 0
    assert "ttl=63" in trace.stdout  # one hop: through the router


def test_a_host_on_two_networks(make_vdens_ns, make_vdens_net):
    # like vdens -m: one interface per network
    front, back = make_vdens_net(), make_vdens_net()
    gateway = make_vdens_ns(nets=[front, back], addr="auto")
    web = make_vdens_ns(nets=[front], addr="auto")
    db = make_vdens_ns(nets=[back], addr="auto")
    assert gateway.run(["ping", "-c", "1", "-W", "5", web.ip()]).returncode == 0
    assert gateway.run(["ping", "-c", "1", "-W", "5", db.ip()]).returncode == 0
    assert web.run(["ping", "-c", "1", "-W", "1", db.ip()]).returncode != 0  # no route


def test_n_clients_and_a_server(make_vdens_ns):
    server = make_vdens_ns(addr="auto")
    listener = server.listen((server.ip(), 80))
    clients = [make_vdens_ns(addr="auto") for _ in range(8)]

    def serve() -> None:
        for _ in clients:
            conn, (peer, _) = listener.accept()
            with conn:
                conn.sendall(peer.encode())

    threading.Thread(target=serve, daemon=True).start()
    for client in clients:
        with client.connect((server.ip(), 80), timeout=10) as s:
            assert s.recv(64).decode() == client.ip()  # the server saw each one's address


def test_a_slow_lossy_network(make_vdens_ns, make_vdens_net):
    wan = make_vdens_net(delay="25ms")
    a, b = make_vdens_ns(nets=[wan], addr="auto"), make_vdens_ns(nets=[wan], addr="auto")
    out = a.run(["ping", "-c", "3", "-i", "0.2", b.ip()], capture_output=True, text=True).stdout
    rtt = float(re.search(r"= [\d.]+/([\d.]+)/", out)[1])
    assert rtt >= 100  # 25 ms each way on each host's link
    wan.impair(delay="0ms", loss=0.0)  # changed during the test
    out = a.run(["ping", "-c", "3", "-i", "0.2", b.ip()], capture_output=True, text=True).stdout
    assert float(re.search(r"= [\d.]+/([\d.]+)/", out)[1]) < 50


def test_the_namespace_with_outside_access(make_vdens_ns):
    host = socket.create_server(("127.0.0.1", 0))
    port = host.getsockname()[1]
    threading.Thread(target=lambda: host.accept()[0].sendall(b"hello"), daemon=True).start()
    outside = make_vdens_ns(nets=["slirp://"], addr="auto")  # 10.0.2.15, gateway, DNS

    def fetch() -> bytes:
        with socket.create_connection(("10.0.2.2", port), timeout=10) as s:  # host's loopback
            return s.recv(5)

    assert outside.call(fetch) == b"hello"
