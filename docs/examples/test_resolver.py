"""A fake DNS server, and /etc/resolv.conf pointing at it."""

import socket
import threading

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

RECORDS = {"db.example.test.": "192.0.2.10", "api.example.test.": "192.0.2.20"}


@pytest.fixture
def dns():
    """Answers A queries for RECORDS on 127.0.0.1:53, inside the test's namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))  # port 53: NET_BIND_SERVICE inside, no root
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, client = sock.recvfrom(512)
            except TimeoutError:
                continue
            query = DNSRecord.parse(data)
            reply = query.reply()
            name = str(query.q.qname)
            if name not in RECORDS:
                reply.header.rcode = RCODE.NXDOMAIN
            elif query.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(RECORDS[name]), ttl=60))
            sock.sendto(reply.pack(), client)

    thread = threading.Thread(target=serve)
    thread.start()
    yield
    stop.set()
    thread.join()
    sock.close()


@pytest.mark.vdens(nets="-", resolver="127.0.0.1")
def test_names_resolve_through_the_fake_server(dns):
    assert socket.gethostbyname("db.example.test") == "192.0.2.10"
    assert socket.gethostbyname("api.example.test") == "192.0.2.20"
    with pytest.raises(socket.gaierror):
        socket.gethostbyname("nowhere.example.test")


def test_a_resolv_conf_file_for_a_namespace(make_vdens_ns, tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\noptions timeout:1\n")
    ns = make_vdens_ns(nets="-", resolvconf=conf)
    shown = ns.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True).stdout
    assert shown == conf.read_text()
