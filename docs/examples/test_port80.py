"""A server on port 80, tested without root."""

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


def fetch(url):
    """GET url, waiting for the server to come up."""
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()
        except urllib.error.URLError:
            time.sleep(0.05)
    raise TimeoutError(url)


@pytest.fixture
def web(tmp_path):
    """http.server on port 80. Function-scoped: in a marked test it starts inside."""
    (tmp_path / "index.html").write_text("it works\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "80", "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield "http://127.0.0.1"
    server.terminate()
    server.wait()


@pytest.mark.vdens(nets="-")  # no interface needed: loopback only
def test_the_server_answers_on_port_80(web):
    assert fetch(f"{web}/index.html") == "it works\n"


def test_driving_the_namespace_from_outside(vdens_ns, tmp_path):
    (tmp_path / "index.html").write_text("it works\n")
    vdens_ns.popen([sys.executable, "-m", "http.server", "80", "--bind", "127.0.0.1"],
                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the client must run inside too: the server is on the namespace's loopback
    assert vdens_ns.call(fetch, "http://127.0.0.1/index.html") == "it works\n"
