"""ctypes binding of the real libvdeplug (vdeplug4): open, send, recv, fds, close."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
from typing import TYPE_CHECKING

from .errors import NetworkError, Unavailable

if TYPE_CHECKING:
    from pathlib import Path

# VDE_ETHBUFSIZE in libvdeplug.h: the largest frame a VDE network carries.
ETHBUFSIZE = 9216 + 14 + 4

_NO_NETWORK = ("", "-", "no")


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("vdeplug") or "libvdeplug.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise Unavailable(
            f"cannot load libvdeplug ({name}): {e}; install it with "
            "`apt install libvdeplug2`"
        ) from None
    lib.vde_open_real.restype = ctypes.c_void_p
    lib.vde_open_real.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    for fn in (lib.vde_recv, lib.vde_send):
        fn.restype = ctypes.c_ssize_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for fn in (lib.vde_datafd, lib.vde_ctlfd, lib.vde_close):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p]
    return lib


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded libvdeplug, loaded on first use."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def scheme(url: str) -> str:
    """The plugin a URL selects: the part before '://', or 'vde' for a bare path."""
    return url.split("://", 1)[0] if "://" in url else "vde"


def plugin_dirs(env: bool = True) -> list[Path]:
    """Where libvdeplug looks for libvdeplug_<scheme>.so, in its order (see _plugin_dirs)."""
    from pathlib import Path  # not at import: the helper does without

    return [Path(d) for d in _plugin_dirs(env)]


def _plugin_dirs(env: bool = True) -> list[str]:
    """Where libvdeplug looks for libvdeplug_<scheme>.so, in its order.

    A set VDEPLUGIN_PATH, even empty, is the only place it looks (env=False:
    where it would look without it).
    """
    lib()
    items = os.environ.get("VDEPLUGIN_PATH") if env else None
    if items is not None:
        parts = items.split(":")  # libvdeplug reads "" as "/" and ignores a trailing ":"
        return [d or "/" for d in (parts[:-1] if parts[-1] == "" else parts)]
    dirs: list[str] = []
    with open("/proc/self/maps") as maps:
        loaded = {line.split()[-1] for line in maps if "/libvdeplug.so" in line}
    for path in sorted(loaded):
        parent = os.path.dirname(path)
        dirs += [os.path.join(parent, "vdeplug"), parent]
    return dirs + ["/usr/local/lib/vdeplug", "/usr/lib/vdeplug"]


def _plugin_path(name: str) -> str | None:
    """The libvdeplug_<name>.so that libvdeplug would load, if any."""
    return next((p for d in _plugin_dirs()
                 if os.path.exists(p := os.path.join(d, f"libvdeplug_{name}.so"))), None)


def plugin_available(name: str) -> bool:
    """Whether libvdeplug_<name>.so is installed where libvdeplug looks."""
    return _plugin_path(name) is not None


def is_no_network(url: str) -> bool:
    """vdens's spellings of 'no interface'."""
    return url.strip() in _NO_NETWORK


def _open_error(url: str, err: int) -> NetworkError:
    name = scheme(url)
    if not plugin_available(name):
        hint = "`apt install libvdeplug-slirp`" if name == "slirp" else (
            "use one of vde://, vxvde://, slirp://, ptp://, udp://, hub://, switch://, null://, "
            "or a switch directory path")
        return NetworkError(f"cannot open VDE network {url!r}: no libvdeplug plugin "
                            f"'libvdeplug_{name}.so' for scheme {name!r}; {hint}")
    if name == "vde" and err in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
        path = url.split("://", 1)[-1]
        return NetworkError(
            f"cannot open VDE network {url!r}: no VDE switch at {path!r} "
            f"({os.strerror(err)}); start one with `vde_plug switch://{path} null://` "
            f"or `vde_switch -s {path}`, or fix the path")
    cause = os.strerror(err) if err else "the plugin rejected the URL"
    return NetworkError(f"cannot open VDE network {url!r}: {cause}; check the URL syntax "
                        f"in vde_plug(1) for the {name}:// plugin")


def _children() -> set[int]:
    """This process's child pids."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        except OSError:
            pass
    return found


_kept: dict[str, ctypes.CDLL | None] = {}


def _keep_loaded(name: str) -> None:
    """Hold a plugin loaded: libvdeplug loads it at each open and unloads it at each
    close, which cost a tenth of a millisecond of a switch's life in mmap and munmap."""
    if name not in _kept:
        path = _plugin_path(name)
        try:
            _kept[name] = ctypes.CDLL(path) if path else None
        except OSError:
            _kept[name] = None


class VdeConn:
    """One libvdeplug connection (a VDECONN*)."""

    def __init__(self, url: str, descr: str = "pytest-vdens") -> None:
        if "\0" in url:
            raise NetworkError(f"cannot open VDE network {url!r}: it contains a NUL byte")
        self.url = url
        before = _children() if scheme(url) == "cmd" else set()
        ctypes.set_errno(0)
        handle = lib().vde_open_real(url.encode(), descr.encode(), 1, None)
        if not handle:
            raise _open_error(url, ctypes.get_errno())
        _keep_loaded(scheme(url))
        self.handle: int | None = handle
        # cmd:// runs a command that its vde_close() waits for, without asking it to end
        self.commands = _children() - before if scheme(url) == "cmd" else set()

    @property
    def datafd(self) -> int:
        return int(lib().vde_datafd(self.handle))

    @property
    def ctlfd(self) -> int:
        """The control fd (EOF when the switch goes away), or -1 if the plugin has none."""
        return int(lib().vde_ctlfd(self.handle))

    def send(self, frame: bytes) -> int:
        return int(lib().vde_send(self.handle, frame, len(frame), 0))

    def recv(self, size: int = ETHBUFSIZE) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = lib().vde_recv(self.handle, buf, size, 0)
        if n < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return buf.raw[:n]

    def close(self) -> None:
        if self.handle is not None:
            for pid in self.commands:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            lib().vde_close(self.handle)
            self.handle = None

    def __enter__(self) -> VdeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
