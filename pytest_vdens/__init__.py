"""pytest-vdens: private user+network namespaces wired to VDE networks, for tests.

The engine (this package minus plugin.py) works without pytest::

    from pytest_vdens import Namespace
    with Namespace() as a, Namespace() as b:      # both on the embedded switch
        a.run(["ip", "addr", "add", "10.0.0.1/24", "dev", "vde0"], check=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ArgumentError,
    CallCrashed,
    HelperError,
    InterfaceNameError,
    NamespaceClosed,
    NetworkError,
    RemoteTraceback,
    TunError,
    Unavailable,
    UserNamespaceError,
    VdensError,
)

if TYPE_CHECKING:
    from .client import shutdown
    from .namespace import Namespace, close_all
    from .switch import Switch

# imported on first use: the helper (python -m pytest_vdens.helper) and the
# zygote start faster without them
_LAZY = {"Namespace": "namespace", "close_all": "namespace", "Switch": "switch", "shutdown": "client"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def drop_caps(*names: str) -> None:
    """Drop capabilities (all, if none is named) from this process, like cadrop(1).

    For code running inside a namespace (Namespace.call, a marked test).
    """
    from . import capabilities

    drop = capabilities.resolve(names) if names else capabilities.names()
    held = tuple(n for n in capabilities.names() if n not in drop)
    capabilities.lower(held)


def default_switch_url() -> str:
    """vde:// URL of this process's embedded switch (started on first use).

    Other VDE programs (vdens, vde_plug, qemu) can join it there.
    """
    from .client import helper

    url: str = helper().request("default_switch")[0]["url"]
    return url


__all__ = [
    "ArgumentError", "CallCrashed", "HelperError", "InterfaceNameError", "Namespace",
    "NamespaceClosed", "NetworkError", "RemoteTraceback", "Switch", "Unavailable", "TunError",
    "UserNamespaceError",
    "VdensError", "close_all", "default_switch_url", "drop_caps", "shutdown",
]
