"""Is this machine ready for pytest-vdens? Its one job: check each thing the engine
needs, and name, for each one missing, the exact command that fixes it.

Used by `pyvdens --doctor`, `pytest --vdens-doctor` and the pytest header line, which
runs at every pytest start: every check is a few syscalls (one short-lived child), no helper.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from . import kernel
from .errors import Unavailable
from .libvdeplug import lib, plugin_dirs

OK, WARN, FAIL = "ok", "warn", "fail"

# The plugins worth naming; switch:// is the one the embedded switch needs.
PLUGINS = ("switch", "vde", "vxvde", "ptp", "slirp")
_PLUGIN_USE = {
    "switch": "the embedded switch, every test's default network (libvdeplug's switch:// "
              "run by the helper)",
    "vde": "vde:// URLs and switch paths (--vdens-switch, nets=...)",
    "vxvde": "vxvde:// networks (VDE over multicast UDP)",
    "ptp": "ptp:// point-to-point links",
    "slirp": "slirp:// (user-mode NAT to the host's network)",
}
_PLUGIN_PACKAGE = {"slirp": "libvdeplug-slirp"}  # Debian/Ubuntu; the others: libvdeplug2

# (sysctl, value that refuses namespaces, value that allows them, refuses root too)
_USERNS_SYSCTLS = (
    ("user.max_user_namespaces", "0", "15000", True),
    ("kernel.unprivileged_userns_clone", "0", "1", False),  # Debian kernels before 11
    ("kernel.apparmor_restrict_unprivileged_userns", "1", "0", False),  # Ubuntu >= 23.10
)
_CLONE_VM = 0x00000100
_CLONE_VFORK = 0x00004000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_EXIT = ctypes.cast(_libc._exit, ctypes.c_void_p)  # the child's whole life: _exit(0)


@dataclass(frozen=True)
class Check:
    """One thing checked: `found` says what is there; `fix` is a command, when not ok."""

    name: str
    status: str  # OK, WARN (optional, or only some users lack it) or FAIL (a basic)
    found: str
    why: str  # what pytest-vdens needs it for
    fix: str | None = None


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def _userns_errno() -> int:
    """0 if a child can be born in a new user+network namespace, else the errno.

    vfork-style: the child shares our memory and runs only libc's _exit, on a stack
    of its own, so there is no address space to copy (a fork costs several times
    more) and no Python code in it, whatever threads this process has. Stacks grow
    down (not on hppa).
    """
    flags = kernel.CLONE_NEWUSER | kernel.CLONE_NEWNET | _CLONE_VM | _CLONE_VFORK | signal.SIGCHLD
    stack = ctypes.create_string_buffer(16384)
    pid = _libc.clone(_EXIT, (ctypes.addressof(stack) + len(stack)) & ~15, flags, None)
    if pid < 0:
        return ctypes.get_errno()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # SIGCHLD ignored: already reaped
        pass
    return 0


def _userns() -> Check:
    name, why = "user namespaces", "every namespace: a new user+network one, made without root"
    root = os.geteuid() == 0
    limit = _sysctl("user.max_user_namespaces")
    # the settings that refuse namespaces: to us, and to users other than root
    refusing = [(f"{s}={bad}", f"sudo sysctl -w {s}={good}", all_users)
                for s, bad, good, all_users in _USERNS_SYSCTLS if _sysctl(s) == bad]
    ours = [r for r in refusing if r[2] or not root]
    err = _userns_errno()
    if err == 0:
        others = [r for r in refusing if not r[2]]
        if root and others:
            return Check(name, WARN, f"work as root, but {', '.join(r[0] for r in others)} "
                                     "refuses them to other users", why,
                         " && ".join(r[1] for r in others))
        return Check(name, OK, f"work (user.max_user_namespaces={limit})", why)
    found = f"refused: {errno.errorcode.get(err, err)} ({os.strerror(err)})"
    if ours:
        return Check(name, FAIL, f"{found} because {', '.join(r[0] for r in ours)}", why,
                     " && ".join(r[1] for r in ours))
    if err in (errno.ENOSPC, errno.EUSERS):
        return Check(name, FAIL, f"{found}: the limit (user.max_user_namespaces={limit}) or "
                                 "32 levels of nesting is reached", why,
                     "sudo sysctl -w user.max_user_namespaces=15000")
    if err == errno.EINVAL:
        return Check(name, FAIL, f"{found}: this kernel has no user or network namespaces",
                     why, "use a kernel built with CONFIG_USER_NS=y and CONFIG_NET_NS=y")
    return Check(name, FAIL, f"{found}, with no sysctl refusing them: a seccomp or AppArmor "
                             "policy of the container or sandbox this runs in does", why,
                 "docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined ...")


def _tun() -> Check:
    name, why = kernel.TUN_PATH, "the interfaces: each is a tap made from /dev/net/tun"
    try:
        st = os.stat(kernel.TUN_PATH)
        mode, others = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}", st.st_mode & 0o006
    except OSError:
        mode, others = "", 0
    try:
        os.close(os.open(kernel.TUN_PATH, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        if e.errno == errno.EACCES:  # the file's mode
            return Check(name, FAIL, f"permission denied ({mode})", why,
                         f"sudo chmod 0666 {kernel.TUN_PATH}")
        container = "docker run --device /dev/net/tun ..."
        if e.errno == errno.EPERM:  # a device cgroup: a container's
            return Check(name, FAIL, "not permitted: a container's device policy refuses it",
                         why, container)
        return Check(name, FAIL, (e.strerror or str(e)).lower(), why,
                     f"sudo modprobe tun (in a container: {container})")
    if os.geteuid() == 0 and others != 0o006:
        return Check(name, WARN, f"opens as root, but not for other users ({mode})", why,
                     f"sudo chmod 0666 {kernel.TUN_PATH}")
    return Check(name, OK, f"opens read-write ({mode})", why)


def _libvdeplug() -> Check:
    why = "every VDE network (libvdeplug 4 opens them)"
    try:
        lib()
    except Unavailable as e:
        return Check("libvdeplug", FAIL, str(e).split(";")[0], why, "sudo apt install libvdeplug2")
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "/libvdeplug.so" in line})
    found = ", ".join(paths) or "loaded"
    if "VDEPLUGIN_PATH" in os.environ:
        found += f"; plugins only from VDEPLUGIN_PATH={os.environ['VDEPLUGIN_PATH']!r}"
    return Check("libvdeplug", OK, found, why)


def _search() -> tuple[list[Path], list[Path]]:
    """Where libvdeplug looks for libvdeplug_<name>.so, and where it would without
    VDEPLUGIN_PATH (vde:// is a plugin like the others, not built into the library)."""
    return plugin_dirs(), [d for d in plugin_dirs(env=False) if d not in plugin_dirs()]


def _first(name: str, dirs: list[Path]) -> Path | None:
    return next((p for d in dirs if (p := d / f"libvdeplug_{name}.so").exists()), None)


def _plugin(name: str, search: tuple[list[Path], list[Path]] | None) -> Check:
    title = f"{name}:// plugin"
    basic = name == "switch"
    why = _PLUGIN_USE[name] + ("" if basic else " (optional)")
    bad = FAIL if basic else WARN
    if search is None:
        return Check(title, bad, "unknown: libvdeplug does not load", why,
                     "sudo apt install libvdeplug2")
    path = _first(name, search[0])
    if path is not None:
        return Check(title, OK, str(path), why)
    hidden = _first(name, search[1])
    if hidden is not None:
        env = os.environ.get("VDEPLUGIN_PATH")
        return Check(title, bad, f"VDEPLUGIN_PATH={env!r} hides {hidden}", why,
                     "unset VDEPLUGIN_PATH")
    return Check(title, bad, f"libvdeplug_{name}.so not installed", why,
                 f"sudo apt install {_PLUGIN_PACKAGE.get(name, 'libvdeplug2')}")


def _prctl() -> Check:
    why = "the helper and namespaces (parent-death signal, subreaper, capabilities)"
    try:
        import prctl
    except ImportError as e:
        return Check("python-prctl", FAIL, f"cannot import prctl: {e}", why,
                     f"sudo apt install libcap-dev && {sys.executable} -m pip install python-prctl")
    return Check("python-prctl", OK, str(getattr(prctl, "__file__", "imported")), why)


def _extensions() -> Check:
    why = "making namespaces (the helper's zygote) and forking into them (marked tests)"
    from .kernel import BUILD_FIX, extension

    found = {name: extension(name) for name in ("_zygote", "_fork")}
    missing = [f"pytest_vdens.{name}" for name, path in found.items() if path is None]
    if missing:
        return Check("C extensions", FAIL, f"not built: {', '.join(missing)}", why,
                     f"{BUILD_FIX} && {sys.executable} -m pip install --force-reinstall --no-deps "
                     "pytest-vdens")
    return Check("C extensions", OK, ", ".join(str(p) for p in found.values()), why)


def _vde_plug() -> Check:
    why = ("vdens users, =command (cmd://) peers and standalone switches (`vde_plug "
           "switch:///tmp/sw null://`); optional: the embedded switch is libvdeplug's "
           "switch:// in the helper, not vde_plug")
    path = shutil.which("vde_plug")
    if path is None:
        return Check("vde_plug", WARN, "not on PATH", why, "sudo apt install vdeplug")
    return Check("vde_plug", OK, path, why)


def checks() -> list[Check]:
    """Every check, basics first; FAIL only for a basic (see ready())."""
    found = [_userns(), _tun(), _libvdeplug()]
    search = _search() if found[-1].status == OK else None
    found += [_plugin(name, search) for name in PLUGINS]
    return found + [_prctl(), _extensions(), _vde_plug()]


def ready(checks: list[Check]) -> bool:
    """Whether the basics are there: user namespaces, tun, libvdeplug, switch://, prctl,
    the C extensions."""
    return all(c.status != FAIL for c in checks)


def _plugins(checks: list[Check]) -> list[str]:
    return sorted(c.name.split(":")[0] for c in checks
                  if c.name.endswith(":// plugin") and c.status == OK)


def summary(checks: list[Check]) -> str:
    """The pytest header's line."""
    if ready(checks):
        who = "as root" if os.geteuid() == 0 else "unprivileged"
        return f"vdens: ready ({who}, plugins: {' '.join(_plugins(checks)) or 'none'})"
    problems = "; ".join(f"{c.name}: {c.found}" for c in checks if c.status == FAIL)
    return f"vdens: NOT ready: {problems} (run `pyvdens --doctor`)"


def report(checks: list[Check]) -> str:
    """Every check on a line; under each problem, why it matters and its fix."""
    width = max(len(c.name) for c in checks)
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    lines = [f"pytest-vdens environment check ({who}, Python {sys.version.split()[0]})", ""]
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.found}")
        if c.status != OK:
            lines.append(f"        {'':<{width}}  needed for: {c.why}")
            if c.fix:
                lines.append(f"        {'':<{width}}  fix: {c.fix}")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    lines.append("")
    if fails:
        lines.append(f"NOT ready: {fails} basic item(s) missing; run the fix commands above.")
    else:
        extra = f"; {warns} optional item(s) missing" if warns else ""
        lines.append(summary(checks).removeprefix("vdens: ") + extra)
    return "\n".join(lines)
