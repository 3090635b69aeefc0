"""Messages between the engine and its helper: one JSON object per SEQPACKET datagram, fds attached."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

MAX_MSG = 1 << 16
MAX_FDS = 253  # SCM_MAX_FD

Message = dict[str, Any]


class TooLong(ValueError):
    """A message over MAX_MSG bytes."""


def send(sock: socket.socket, msg: Message, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(msg).encode()
    if len(data) > MAX_MSG:
        raise TooLong(f"message of {len(data)} bytes, over {MAX_MSG}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[Message, list[int]]:
    """One message and the fds that came with it; EOFError when the peer is gone."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MSG, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        raise EOFError("peer closed the connection")
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise TooLong("truncated message from peer")
    msg: Message = json.loads(data)
    return msg, fds
