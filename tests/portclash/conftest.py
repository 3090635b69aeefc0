"""Servers on the fixed ports the application expects: 8080 (web) and 6379 (store)."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

WEB = ("127.0.0.1", 8080)
STORE = ("127.0.0.1", 6379)
LATENCY = 0.05  # seconds per request, as a real backend would take


class Store(socketserver.ThreadingTCPServer):
    """A tiny Redis-like store: 'INCR key', 'GET key', 'SET key value', one per line."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        super().__init__(STORE, StoreHandler)


class StoreHandler(socketserver.StreamRequestHandler):
    server: Store

    def handle(self) -> None:
        for line in self.rfile:
            op, key, *value = line.decode().split()
            data = self.server.data
            if op == "INCR":
                data[key] = str(int(data.get(key, "0")) + 1)
                reply = data[key]
            elif op == "SET":
                data[key] = value[0]
                reply = "OK"
            else:
                reply = data.get(key, "nil")
            self.wfile.write(f"{reply}\n".encode())


def store(command: str) -> str:
    """Send one command to the store at its fixed address."""
    with socket.create_connection(STORE, timeout=5) as s:
        s.sendall(f"{command}\n".encode())
        return s.makefile().readline().strip()


class Web(http.server.BaseHTTPRequestHandler):
    """The application: GET /visit/PAGE counts a visit in the store."""

    def do_GET(self) -> None:
        threading.Event().wait(LATENCY)
        if self.path.startswith("/visit/"):
            status, body = 200, store(f"INCR {self.path.removeprefix('/visit/')}")
        else:
            status, body = 404, "not found"
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def serving(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    thread = threading.Thread(target=server.serve_forever, args=(0.01,))
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def kv() -> Iterator[socketserver.BaseServer]:
    yield from serving(Store())


@pytest.fixture
def web(kv: socketserver.BaseServer) -> Iterator[str]:
    for _ in serving(http.server.ThreadingHTTPServer(WEB, Web)):
        yield "http://127.0.0.1:8080"
