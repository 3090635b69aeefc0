"""Thin wrappers of the Linux calls the engine needs in Python: clone, setns, taps, names."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from importlib.machinery import EXTENSION_SUFFIXES

from .errors import InterfaceNameError, Unavailable

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

IFNAMSIZ = 16
_BAD_IFNAME_BYTES = frozenset(b"/: \t\n\v\f\r\x7f\xa0")
TUN_PATH = "/dev/net/tun"
_TUNSETCARRIER = 0x400454E2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def userns_hint(err: int) -> str:
    """Why the kernel refused a user namespace here, and the setting to change."""
    msg = f"cannot create a user namespace: {os.strerror(err)}."
    fixes = []
    for path, bad, fix in (
        ("/proc/sys/user/max_user_namespaces", "0",
         "sudo sysctl -w user.max_user_namespaces=15000"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0",
         "sudo sysctl -w kernel.unprivileged_userns_clone=1  (older Debian)"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
         "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0  (Ubuntu >= 23.10)"),
    ):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    fixes.append(fix)
        except OSError:
            pass
    if err == errno.ENOSPC and not fixes:
        fixes.append("the user namespace limit is reached: raise user.max_user_namespaces "
                     "(sysctl, or /proc/sys/user/max_user_namespaces in this namespace), or "
                     "close namespaces; nesting is limited to 32 levels")
    if not fixes:
        fixes.append("check kernel.apparmor_restrict_unprivileged_userns (Ubuntu >= 23.10), "
                     "kernel.unprivileged_userns_clone (older Debian), user.max_user_namespaces, "
                     "and seccomp filters of the container you run in")
    return msg + " Fix: " + "; ".join(fixes)


BUILD_FIX = "sudo apt install gcc python3-dev"


def extension(name: str) -> str | None:
    """The path of our C extension `name` (_zygote, _fork): beside this file, where pip
    (even -e) builds it, and never another tree's."""
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(path := os.path.join(here, name + suffix)):
            return path
    return None


def unbuilt(name: str) -> Unavailable:
    return Unavailable(f"pytest_vdens.{name} (C) is not built: reinstall pytest-vdens with a "
                       f"C compiler and the Python headers ({BUILD_FIX})")


def fork_into(joins: list[tuple[int, int]], cwd: str | None, keep: list[int], last_cap: int) -> int:
    """os.fork(), the child joining `joins` [(ns fd, CLONE_NEW*)] in order first.

    The child is ours, in every namespace joined (a PID one included), back in
    `cwd` if given, and holds only the capabilities `keep` (numbers up to
    `last_cap`); it dies with us. The joining happens in C before the copy
    (_fork.c), so a refusal is raised here, as OSError. With threads, a plain
    fork first makes a single-threaded copy to do it from, which costs a second
    copy of this process.
    """
    try:
        from . import _fork  # C, built by setup.py
    except ImportError:
        raise unbuilt("_fork") from None

    if len(os.listdir("/proc/self/task")) == 1:
        pid: int = _fork.fork_into(joins, cwd, keep, last_cap)
        return pid
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # pragma: no cover - the single-threaded copy
        os.close(r)
        try:
            if (pid := _fork.fork_into(joins, cwd, keep, last_cap, True)) == 0:
                os.close(w)
                return 0
            os.write(w, str(pid).encode())
        except BaseException as e:
            os.write(w, f"{getattr(e, 'errno', 0) or 0}:{e}".encode()[:4000])
        os._exit(0)
    os.close(w)
    try:
        answer = os.read(r, 4096).decode(errors="replace")  # not to EOF: the child holds it
    finally:
        os.close(r)
        os.waitpid(mid, 0)
    if answer.isdigit():
        return int(answer)
    err, _, message = answer.partition(":")
    raise OSError(int(err or 0), message or "fork: no answer")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def check_ifname_prefix(prefix: str, count: int) -> None:
    """Refuse a prefix that would make an interface name the kernel rejects."""
    longest = f"{prefix}{max(count - 1, 0)}"
    if not prefix or len(longest.encode()) >= IFNAMSIZ:
        raise InterfaceNameError(
            f"interface prefix {prefix!r} is invalid: interface names are at most "
            f"{IFNAMSIZ - 1} bytes, and {longest!r} is {len(longest.encode())}; use a shorter prefix "
            "such as 'vde' or 'eth'")
    # the kernel's dev_valid_name(): no '/', ':' or (its) whitespace, in bytes
    bad = sorted({chr(b) for b in prefix.encode() if b in _BAD_IFNAME_BYTES or b < 0x20})
    if bad or prefix in (".", ".."):
        raise InterfaceNameError(
            f"interface prefix {prefix!r} is invalid: the kernel refuses names with "
            f"{''.join(bad)!r}; use letters, digits, '-' or '_'")


def set_carrier(tap: int, up: bool) -> None:
    """Show the link as (dis)connected inside the namespace (ip link: NO-CARRIER)."""
    fcntl.ioctl(tap, _TUNSETCARRIER, struct.pack("i", int(up)))
