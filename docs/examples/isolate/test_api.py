"""Run with: pytest -n 2 --vdens-isolate"""

import socket
import urllib.request

import pytest


def get(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


# These run in the session namespace, where the api fixture started the server.
@pytest.mark.vdens(scope="session")
@pytest.mark.parametrize("n", range(4))
def test_the_api_answers(api, n):
    assert get(f"{api}/status") == "ok\n"


# Isolated like every unmarked test: a loopback of its own, where port 8080 is free.
@pytest.mark.parametrize("n", range(4))
def test_a_test_with_its_own_port_8080(n):
    with socket.create_server(("127.0.0.1", 8080)):
        pass
