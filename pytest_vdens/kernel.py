"""Thin wrappers of the Linux calls the engine needs: namespaces, taps, mounts."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import struct
from collections.abc import Callable

from .errors import InterfaceNameError, TunError, UserNamespaceError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_CLONE_PARENT = 0x00008000

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
_MNT_DETACH = 2

IFNAMSIZ = 16
_BAD_IFNAME_BYTES = frozenset(b"/: \t\n\v\f\r\x7f\xa0")
TUN_PATH = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_TUNSETCARRIER = 0x400454E2
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


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
        if flags & CLONE_NEWUSER and e in (errno.EPERM, errno.ENOSPC, errno.EACCES, errno.EUSERS):
            raise UserNamespaceError(userns_hint(e))
        raise OSError(e, f"clone: {os.strerror(e)}")
    return pid


def fork_into(flags: int) -> int:
    """fork() straight into new namespaces: 0 in the child, its pid in the parent.

    With CLONE_NEWPID the child is PID 1 of its namespace, which saves the
    second fork that unshare() would need. Like os.fork() without at-fork
    hooks: only the calling thread goes on in the child.
    """
    if len(os.listdir("/proc/self/task")) == 1:
        return _raw_clone(flags)
    # Another thread may hold a libc lock (malloc): a real fork() first, then
    # clone from that single-threaded copy, on our behalf.
    pid, mid = fork_beside(lambda: None, flags)
    if pid:
        os.waitpid(mid, 0)
    return pid


def fork_beside(prepare: Callable[[], None], flags: int = 0) -> tuple[int, int]:
    """A child of ours, cloned (with `flags`) by a forked intermediate after prepare().

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
            pid = _raw_clone(flags | _CLONE_PARENT)
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
    if kind == "UserNamespaceError":
        raise UserNamespaceError(userns_hint(int(err)))
    raise OSError(int(err or 0), f"clone: {kind}: {message}" if answer else "clone: no answer")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def _enc(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), flags, None), f"mount {target}")


def umount_detach(target: str) -> None:
    _check(_libc.umount2(target.encode(), _MNT_DETACH), f"umount {target}")


def write_identity_maps(uid: int, gid: int) -> None:
    """Map our own uid/gid to themselves in a fresh user namespace, as vdens does.

    Mapping uid 0 needs CAP_SETFCAP where we came from (Linux >= 5.12): root
    inside a namespace that lacks it (a nested one) stays unmapped, shown as
    the overflow uid, with the same rights.
    """
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    for path, ident in (("/proc/self/uid_map", uid), ("/proc/self/gid_map", gid)):
        try:
            with open(path, "w") as f:
                f.write(f"{ident} {ident} 1")
        except PermissionError:
            if ident != 0:
                raise


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


def open_tap(name: str) -> int:
    """A persistent, nonblocking tap named `name` in the current network namespace.

    Persistent, so that closing its fd is cheap: the kernel deletes the device
    when its network namespace dies, in a batched background worker, instead of
    a ~25 ms synchronous unregister on close().
    """
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        fix = ("run `sudo chmod 0666 /dev/net/tun` (most distributions ship it 0666)"
               if e.errno in (errno.EACCES, errno.EPERM)
               else "load the tun module: `sudo modprobe tun`")
        raise TunError(f"cannot open {TUN_PATH}: {e.strerror}; {fix}") from None
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
        fcntl.ioctl(fd, _TUNSETPERSIST, 1)
    except OSError as e:
        os.close(fd)
        raise TunError(f"cannot create tap {name!r}: {e.strerror}") from None
    return fd


def set_carrier(tap: int, up: bool) -> None:
    """Show the link as (dis)connected inside the namespace (ip link: NO-CARRIER)."""
    fcntl.ioctl(tap, _TUNSETCARRIER, struct.pack("i", int(up)))
