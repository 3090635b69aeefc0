"""Fails on purpose: its report shows what happened on the network."""


def test_the_server_answers(make_vdens_ns):
    client = make_vdens_ns(addr=["10.0.0.1/24"])
    server = make_vdens_ns(addr=["10.0.0.2/24"])
    # nothing listens on the server: the client's SYN gets a RST
    with client.connect(("10.0.0.2", 8080), timeout=5):
        pass
