"""Slow, narrow and broken links."""

import subprocess
import sys

import pytest

from pytest_vdens import Switch


def up(ns, cidr, dev="vde0"):
    ns.run(["ip", "addr", "add", cidr, "dev", dev], check=True)
    ns.run(["ip", "link", "set", dev, "up"], check=True)


def rtt_ms(ns, address):
    out = ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "5", address], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    return float(out.stdout.rsplit("=", 1)[1].split("/")[1])  # rtt min/AVG/max/mdev


@pytest.fixture
def far_side():
    """A second switch, for the far end of an emulated wire."""
    with Switch() as switch:
        yield switch.url


def test_a_wire_with_100ms_of_delay(make_vdens_ns, vdens_switch, far_side):
    # wirefilter (package vde-wirefilter) between the two switches, run in a
    # namespace of its own so that it is stopped with the test
    wire = make_vdens_ns(nets="-")
    wire.popen(["dpipe", "vde_plug", vdens_switch, "=", "wirefilter", "-d", "100",
                "=", "vde_plug", far_side], stderr=subprocess.DEVNULL)
    near, far = make_vdens_ns(), make_vdens_ns(nets=[far_side])
    up(near, "10.0.0.1/24")
    up(far, "10.0.0.2/24")
    assert rtt_ms(near, "10.0.0.2") >= 200  # 100 ms each way


def send_time(ns, address, size):
    """Seconds to push `size` bytes to address:9 from inside ns."""
    code = f"""
import socket, time
data = bytes({size})
start = time.monotonic()
with socket.create_connection(("{address}", 9), timeout=30) as s:
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
print(time.monotonic() - start)
"""
    return float(ns.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True).stdout)


def sink(ns):
    """A TCP discard server on port 9 inside ns (port < 1024: no root needed)."""
    code = """
import socket
server = socket.create_server(("0.0.0.0", 9))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while conn.recv(65536):
            pass
"""
    proc = ns.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"


def test_a_link_limited_to_1_mbit_s(make_vdens_ns):
    client, server = make_vdens_ns(), make_vdens_ns()
    up(client, "10.0.0.1/24")
    up(server, "10.0.0.2/24")
    sink(server)
    client.run(["tc", "qdisc", "add", "dev", "vde0", "root", "tbf",
                "rate", "1mbit", "burst", "16kbit", "latency", "400ms"], check=True)
    assert send_time(client, "10.0.0.2", 250_000) > 1.5  # 2 Mbit at 1 Mbit/s: ~2 s


def test_a_link_that_goes_down(make_vdens_ns):
    a, b = make_vdens_ns(), make_vdens_ns()
    up(a, "10.0.0.1/24")
    up(b, "10.0.0.2/24")
    b.run(["ip", "link", "set", "vde0", "down"], check=True)
    assert a.run(["ping", "-c", "1", "-W", "1", "10.0.0.2"]).returncode != 0
    b.run(["ip", "link", "set", "vde0", "up"], check=True)
    assert a.run(["ping", "-c", "1", "-W", "5", "10.0.0.2"]).returncode == 0


@pytest.mark.vdens
def test_netem_delay_when_the_kernel_has_it():
    subprocess.run(["ip", "link", "set", "vde0", "up"], check=True)
    netem = subprocess.run(["tc", "qdisc", "add", "dev", "vde0", "root", "netem",
                            "delay", "100ms", "loss", "10%"], capture_output=True, text=True)
    if "qdisc kind is unknown" in netem.stderr:
        pytest.skip("this kernel has no sch_netem module")
    assert netem.returncode == 0, netem.stderr
    shown = subprocess.run(["tc", "qdisc", "show", "dev", "vde0"], capture_output=True,
                           text=True).stdout
    assert "delay 100ms" in shown and "loss 10%" in shown
