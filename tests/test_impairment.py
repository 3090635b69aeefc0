"""Degraded links: delay, loss and rate through vde2's wirefilter, changed during a test."""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import threading
import time

import pytest

from pytest_vdens import ArgumentError, Namespace, Switch

from .conftest import echo, start_echo_server


def rtt_ms(ns: Namespace, target: str, count: int = 10) -> float:
    out = ns.run(["ping", "-c", str(count), "-i", "0.05", "-W", "5", target],
                 capture_output=True, text=True).stdout
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    assert times, out
    return statistics.median(times)


def udp_delivered(sender: Namespace, receiver: Namespace, count: int = 1000) -> float:
    rx = receiver.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((receiver.ip(), 9000))
    rx.settimeout(1)
    tx = sender.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"warm-up", (receiver.ip(), 9000))  # resolve ARP first
    time.sleep(0.2)
    got = []

    def receive() -> None:  # read as they come: a full socket buffer would drop them too
        try:
            while True:
                if rx.recv(64) != b"warm-up":
                    got.append(1)
        except TimeoutError:
            pass

    reader = threading.Thread(target=receive)
    reader.start()
    for i in range(count):
        tx.sendto(b"%d" % i, (receiver.ip(), 9000))
        if i % 20 == 0:
            time.sleep(0.002)
    reader.join()
    rx.close()
    tx.close()
    return len(got) / count


@pytest.fixture
def pair() -> tuple[Namespace, Namespace]:
    with Switch() as lan, Namespace([lan.url], addr="auto") as a, \
            Namespace([lan.url], addr="auto") as b:
        yield a, b  # type: ignore[misc]


def test_delay_grows_the_rtt_and_can_be_changed_and_cleared(pair: tuple[Namespace, Namespace]) -> None:
    a, b = pair
    base = rtt_ms(a, b.ip())
    a.impair("vde0", delay="40ms")
    delayed = rtt_ms(a, b.ip())
    assert delayed >= base + 40  # each direction: +80 in all
    a.impair("vde0", delay=0.1)
    assert rtt_ms(a, b.ip(), 5) >= base + 100
    a.impair("vde0")
    assert rtt_ms(a, b.ip()) < 40


def test_loss_drops_about_that_share_of_datagrams(pair: tuple[Namespace, Namespace]) -> None:
    a, b = pair
    assert udp_delivered(a, b) > 0.97
    a.impair(loss=0.2)
    delivered = udp_delivered(a, b)
    assert 0.7 < delivered < 0.9, delivered


def test_rate_limits_a_transfer(pair: tuple[Namespace, Namespace]) -> None:
    a, b = pair
    start_echo_server(b, b.ip(), 7000)
    a.impair(rate="2mbit")
    started = time.monotonic()
    payload = b"x" * 200_000
    assert a.call(echo, b.ip(), 7000, payload, 30) == payload
    # 1.6 Mbit each way, both ways at once, at 2 Mbit/s: 0.8 s at least
    assert time.monotonic() - started > 0.7


def test_a_host_on_an_external_vde_switch_can_be_impaired(vde_switch: str) -> None:
    with Namespace([vde_switch], addr="10.40.0.1/24") as a, \
            Namespace([vde_switch], addr="10.40.0.2/24") as b:
        base = rtt_ms(a, "10.40.0.2")
        b.impair(delay="30ms")
        assert rtt_ms(a, "10.40.0.2") >= base + 30


@pytest.mark.parametrize("params, words", [
    ({"loss": 1.5}, ["loss=1.5", "from 0 to 1"]),
    ({"delay": "-5ms"}, ["delay='-5ms'"]),
    ({"delay": -0.1}, ["negative"]),
    ({"dup": 1}, ["dup=1", "0.99"]),
    ({"rate": "fast"}, ["rate='fast'", "8mbit"]),
    ({"delay": "10ms", "jitter": "20ms"}, ["exceeds"]),
    ({"latency": 1}, ["unknown impairment latency"]),
])
def test_bad_impairment_values_are_named(pair: tuple[Namespace, Namespace], params: dict[str, object],
                                         words: list[str]) -> None:
    a, b = pair
    with pytest.raises(ArgumentError) as info:
        a.impair(**params)
    for word in words:
        assert word in str(info.value)
    assert rtt_ms(a, b.ip(), 3) < 40  # nothing half-applied


def test_impairment_needs_a_switch_network() -> None:
    with Namespace(["slirp://"]) as ns:
        with pytest.raises(ArgumentError, match="needs a vde:// network"):
            ns.impair(delay="10ms")


def test_no_wirefilter_outlives_its_namespace(pair: tuple[Namespace, Namespace]) -> None:
    from pytest_vdens.client import helper

    def filters() -> list[str]:  # this helper's: other tests may run beside us (xdist)
        return subprocess.run(["pgrep", "-P", str(helper().pid), "wirefilter"],
                              capture_output=True, text=True).stdout.split()

    a, b = pair
    a.impair(delay="1ms")
    b.impair(loss=0.01)
    assert len(filters()) == 2
    a.close()
    b.close()
    assert filters() == []


def test_a_network_impairs_each_host_s_link_and_can_change() -> None:
    with Switch(delay="20ms") as wan, Namespace([wan.url], addr="auto") as a, \
            Namespace([wan.url], addr="auto") as b:
        assert rtt_ms(a, b.ip(), 5) >= 80  # two links, both ways
        wan.impair(delay="5ms")
        assert 20 <= rtt_ms(a, b.ip(), 5) < 80
        wan.impair()
        assert rtt_ms(a, b.ip(), 5) < 20
        with pytest.raises(ArgumentError, match="loss=2"):
            wan.impair(loss=2)
