"""A server that is slow to start: once per worker, in the worker's session namespace."""

import socket
import subprocess
import sys
import time

import pytest


def wait_for_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="session")
def api(vdens_session_ns, tmp_path_factory):
    docs = tmp_path_factory.mktemp("api")
    (docs / "status").write_text("ok\n")
    # Inside this worker's session namespace: on its own port 8080, whatever
    # the other workers (or anything else on the machine) do.
    server = vdens_session_ns.popen(
        [sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1"],
        cwd=docs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vdens_session_ns.call(wait_for_port, 8080)
    yield "http://127.0.0.1:8080"
    server.terminate()
    server.wait()
