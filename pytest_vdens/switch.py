"""Embedded VDE switches, as seen from the calling process."""

from __future__ import annotations

import os
from typing import Any

from . import client, impairment


class Switch:
    """An embedded switch: libvdeplug's switch:// run by this process's helper.

    Its directory is private to the user (0700, sockets 0600) and removed at close.

    Other VDE programs (vdens, vde_plug, qemu) and namespaces join it at `url`.
    """

    def __init__(self, **impair: object) -> None:
        """`impair` (delay, jitter, loss, dup, rate: see Namespace.impair) applies to
        the link of each host that joins, both ways: between two hosts a frame
        crosses two such links."""
        impairment.commands(impair)
        self._helper = client.helper()
        reply, _ = self._helper.request("switch_open", impair=impair)
        self.id: int = reply["id"]
        self.url: str = reply["url"]
        self.closed = False

    def __repr__(self) -> str:
        return f"<Switch {self.url}{' closed' if self.closed else ''}>"

    def impair(self, **params: object) -> None:
        """Change the impairment of every host's link, now and for those that join."""
        impairment.commands(params)
        self._helper.request("switch_impair", id=self.id, params=params)

    def close(self, wait: bool = True) -> None:
        """Unplug its hosts (they see no carrier) and remove its directory.

        With wait=False it returns at once: the helper unplugs its hosts
        before it serves this process's next request, and removes it soon after.
        """
        if not self.closed:
            self.closed = True
            if self._helper.owner == os.getpid() and self._helper.alive:
                if wait:
                    self._helper.request("switch_close", id=self.id)
                else:
                    self._helper.post("switch_close", id=self.id, wait=False)

    def __enter__(self) -> Switch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
