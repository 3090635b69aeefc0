"""The exceptions pytest-vdens raises; every one names the bad value and the fix."""

from __future__ import annotations


class VdensError(Exception):
    """Base class of every pytest-vdens error."""


class NetworkError(VdensError):
    """A VDE network could not be opened: bad URL, missing plugin, no switch there."""


class InterfaceNameError(VdensError, ValueError):
    """An interface prefix the kernel would refuse."""


class ArgumentError(VdensError, ValueError):
    """Any other bad argument (capability name, resolver address, ...)."""


class Unavailable(VdensError):
    """This machine cannot make namespaces: no user namespaces, tun or VDE software."""


class TunError(Unavailable):
    """/dev/net/tun could not be used to make a tap."""


class UserNamespaceError(Unavailable):
    """The kernel refused to make a user namespace."""


class HelperError(VdensError):
    """The helper process failed or went away."""


class NamespaceClosed(VdensError):
    """The namespace was used after close()."""


class CallCrashed(VdensError):
    """Code run with Namespace.call() died without returning (signal, os._exit)."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised inside a namespace."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def by_name(name: str) -> type[VdensError]:
    """The error class a helper reply names (VdensError for unknown names)."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, VdensError):
        return cls
    return VdensError
