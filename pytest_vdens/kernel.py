"""Thin wrappers of the Linux calls the engine needs in Python: clone, setns, taps, names."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import struct
from collections.abc import Callable

from .errors import InterfaceNameError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_CLONE_PARENT = 0x00008000

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


_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "i686": 120,
              "armv7l": 120, "s390x": 120}
_pylibc = ctypes.PyDLL(None, use_errno=True)  # keeps the GIL: the child must own it


def _raw_clone(flags: int) -> int:
    machine = os.uname().machine
    args = [flags | signal.SIGCHLD, 0, 0, 0, 0]
    if machine == "s390x":  # clone(newsp, flags, ...) there
        args[:2] = args[1::-1]
    _pylibc.syscall.restype = ctypes.c_long
    pid = int(_pylibc.syscall(*(ctypes.c_long(a) for a in [_SYS_CLONE[machine], *args])))
    if pid < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"clone: {os.strerror(e)}")
    return pid


def fork_beside(prepare: Callable[[], None]) -> tuple[int, int]:
    """A child of ours, cloned by a forked intermediate after prepare().

    (0, 0) in the child; in the caller, its pid and the intermediate's, which
    exits at once and is the caller's to reap. The intermediate is a plain
    fork, single-threaded whatever threads we have, so it may clone safely,
    and what prepare() joins (setns) the child is in, PID namespace included,
    while its parent is us (CLONE_PARENT): nothing has to stand in for it.
    A failure in the intermediate is raised here.
    """
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # pragma: no cover - the intermediate
        os.close(r)
        try:
            prepare()
            pid = _raw_clone(_CLONE_PARENT)
            if pid == 0:
                os.close(w)
                return 0, 0
            os.write(w, str(pid).encode())
        except BaseException as e:
            os.write(w, f"{type(e).__name__}:{getattr(e, 'errno', 0) or 0}:{e}".encode()[:4000])
        os._exit(0)
    os.close(w)
    try:
        answer = os.read(r, 4096).decode(errors="replace")  # not to EOF: that is its exit
    finally:
        os.close(r)
    if answer.isdigit():
        return int(answer), mid
    os.waitpid(mid, 0)
    kind, _, rest = answer.partition(":")
    err, _, message = rest.partition(":")
    raise OSError(int(err or 0), f"clone: {kind}: {message}" if answer else "clone: no answer")


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
