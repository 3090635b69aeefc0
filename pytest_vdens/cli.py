"""pyvdens: a drop-in for vdens(1) built on the pytest-vdens engine.

Its one job: read a vdens command line, make one Namespace from it, run the
command inside with this process's terminal, and exit with the command's status.

Exit status: the command's own; 128+N if a signal N killed it; 126/127 if it
could not be run; 2 for a bad argument; 1 when the engine fails (a network
that cannot be opened, no /dev/net/tun, user namespaces disabled, ...).
Every failure of pyvdens itself is one line on stderr: `pyvdens: what; fix`.
`pyvdens --doctor` checks this machine instead (doctor.py): 0 when ready, else 1.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import doctor, kernel, resolver
from .client import shutdown
from .errors import ArgumentError, InterfaceNameError, VdensError
from .libvdeplug import is_no_network
from .namespace import Namespace

EXIT_ENGINE = 1
EXIT_USAGE = 2

USAGE = """\
pyvdens [options] [vde_network [command [args]]]
       pyvdens -m|--multi [options] vde_network [vde_network ...] [-- command [args]]
       pyvdens --doctor"""

EPILOG = """\
vde_network is a libvdeplug URL (vde:///tmp/sw, vxvde://, slirp://, ...) or =command
(a VDE stream on the command's stdin/stdout); "-", "no" or none means no interface.
The command ($SHELL if omitted) gets NET_ADMIN, NET_RAW, NET_BIND_SERVICE and
NET_BROADCAST inside the namespace (and SYS_ADMIN with -s).
VDE_RESOLVADDR and VDE_RESOLVCONF give the defaults of -R and -r.
Exit status: the command's (128+N if killed by signal N); 2 for a bad argument;
1 when a network or the namespace cannot be made. --doctor: 0 when this machine
is ready, 1 when a basic item is missing."""

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# si_code of a signal the kernel sends to a whole process group, e.g. the
# terminal's ^C: the command, in our group, got it already.
_SI_KERNEL = 0x80


class UsageError(Exception):
    """A bad command line; its text names the value and the fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            message = f"unknown option {message.split(': ', 1)[1]!r}"
        raise UsageError(f"{message}; see `pyvdens --help`")


def _parser() -> _Parser:
    p = _Parser(prog="pyvdens", usage=USAGE, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Run a command in a private user+network namespace "
                            "connected to VDE networks, like vdens(1).")
    p.add_argument("-m", "--multi", action="store_true",
                   help="connect to several networks; the command follows --")
    p.add_argument("-i", "--iface", metavar="PREFIX", default="vde",
                   help="interface name prefix (default: vde, giving vde0, vde1, ...)")
    p.add_argument("-R", "--resolvaddr", metavar="ADDRS",
                   help="DNS servers for /etc/resolv.conf inside, e.g. 9.9.9.9,2620:fe::fe")
    p.add_argument("-r", "--resolvconf", metavar="FILE",
                   help="file to show as /etc/resolv.conf inside (ignored with -R)")
    p.add_argument("-s", "--sysadm", action="store_true",
                   help="also grant CAP_SYS_ADMIN (with a private mount namespace)")
    # vdens chooses between clone(2) and unshare(2); the engine's zygote always
    # clones, so both are accepted and mean the same.
    p.add_argument("-c", "--clone", action="store_true", help="accepted for vdens compatibility")
    p.add_argument("-u", "--unshare", action="store_true", help="accepted for vdens compatibility")
    p.add_argument("--drop-caps", action="store_true",
                   help="run the command with no capability at all (more than cadrop(1))")
    # long only: vdens's one-letter options may grow, -d is not ours to take
    p.add_argument("--doctor", action="store_true",
                   help="check this machine (user namespaces, /dev/net/tun, libvdeplug and "
                        "its plugins, python-prctl, vde_plug), print each problem with the "
                        "command that fixes it, and exit: 0 when ready, 1 when not")
    # REMAINDER: parsing stops at the first network; the command's own
    # options (pyvdens vde:///sw ls -l) are left alone.
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _split(multi: bool, rest: list[str]) -> tuple[list[str], list[str]]:
    """Networks and command, as vdens splits what follows its options."""
    if rest[:1] == ["--"]:  # getopt's end of options, before the first network
        rest = rest[1:]
    if not multi:
        nets, command = rest[:1], rest[1:]
    else:
        end = rest.index("--") if "--" in rest else len(rest)
        nets, command = rest[:end], rest[end + 1:]
        if not nets:
            raise UsageError("-m/--multi needs at least one vde_network; "
                             "e.g. `pyvdens -m vde:///tmp/sw1 vde:///tmp/sw2 -- ip link`")
        mixed = [n for n in nets if is_no_network(n)]
        if mixed and len(nets) > 1:
            raise UsageError(f"network {mixed[0]!r} means no interface and cannot be listed "
                             "with other networks; remove it")
    # vdens's "=command" network, a VDE stream on the command's stdin/stdout, is
    # what libvdeplug's cmd:// plugin opens
    nets = ["cmd://" + n[1:] if n.startswith("=") else n for n in nets]
    return nets, command or [os.environ.get("SHELL") or "/bin/sh"]


def _option_or_env(value: str | None, option: str, env: str) -> tuple[str | None, str]:
    """The option's value, else the environment's (an empty variable counts as unset)."""
    if value is not None:
        return value, option
    return os.environ.get(env) or None, env


def _settings(opts: argparse.Namespace, nets: list[str]) -> dict[str, Any]:
    """Namespace() keywords from the options, each checked here so that a bad
    value is a usage error naming its option."""
    addrs, addr_src = _option_or_env(opts.resolvaddr, "-R/--resolvaddr", "VDE_RESOLVADDR")
    conf, conf_src = _option_or_env(opts.resolvconf, "-r/--resolvconf", "VDE_RESOLVCONF")
    try:
        kernel.check_ifname_prefix(opts.iface, max(len(nets), 1))
    except InterfaceNameError as e:
        raise UsageError(f"-i/--iface: {e}") from None
    try:
        # vdens skips empty items: "-R 9.9.9.9," is fine
        servers = resolver.parse_addresses([a for a in (addrs or "").split(",") if a.strip()])
        if addrs is not None and not servers:
            raise ArgumentError(f"resolver {addrs!r} names no address; "
                                "use e.g. 9.9.9.9,2620:fe::fe")
    except ArgumentError as e:
        raise UsageError(f"{addr_src}: {e}") from None
    try:
        conf_path = None if servers else resolver.check_resolvconf(conf)  # -R wins, as in vdens
    except ArgumentError as e:
        raise UsageError(f"{conf_src}: {e}") from None
    return {"iface": opts.iface, "resolver": servers or None, "resolvconf": conf_path,
            "sysadm": opts.sysadm}


def _run(ns: Namespace, argv: list[str], caps: list[str] | None, early: list[int]) -> int:
    """Run argv inside on our stdin/stdout/stderr, forwarding signals; its exit code."""
    proc = ns.popen(argv, caps=caps)
    # The engine's relay (proc.pid) forwards signals to the command. Out of our
    # process group, it no longer also gets the terminal's ^C, so the command,
    # which stays in the terminal's foreground group, gets each one once.
    try:
        os.setpgid(proc.pid, proc.pid)
    except OSError:
        pass
    waited = {*_FORWARDED, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)  # only now: children inherit masks
    for sig in early:  # arrived while the command was being started
        proc.send_signal(sig)
    while proc.poll() is None:
        info = signal.sigtimedwait(waited, 1.0)
        if info is not None and info.si_signo in _FORWARDED and info.si_code != _SI_KERNEL:
            proc.send_signal(info.si_signo)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _doctor(rest: list[str]) -> int:
    """pyvdens --doctor: the report on stdout; 0 when ready, 1 when not."""
    if rest:
        raise UsageError(f"--doctor takes no network or command, got {' '.join(rest)!r}; "
                         "run `pyvdens --doctor` alone")
    found = doctor.checks()
    print(doctor.report(found))
    return 0 if doctor.ready(found) else EXIT_ENGINE


def _fail(status: int, message: str) -> int:
    lines = message.strip().splitlines() or ["failed"]
    print(f"pyvdens: {lines[0]}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The pyvdens command; returns its exit status."""
    early: list[int] = []
    for sig in _FORWARDED:  # until the command runs: remember, don't die half-way
        signal.signal(sig, lambda signum, frame: early.append(signum))
    try:
        opts = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if opts.doctor:
            return _doctor(opts.rest)
        nets, command = _split(opts.multi, opts.rest)
        settings = _settings(opts, nets)
    except UsageError as e:
        return _fail(EXIT_USAGE, str(e))
    try:
        ns = Namespace(nets, **settings)
    except (ArgumentError, InterfaceNameError) as e:
        return _fail(EXIT_USAGE, str(e))
    except VdensError as e:
        return _fail(EXIT_ENGINE, str(e))
    try:
        if early:
            return 128 + early[0]
        return _run(ns, command, [] if opts.drop_caps else None, early)
    except OSError as e:  # the command could not be exec'd; 127 and 126 as in sh(1)
        if e.errno == errno.ENOENT or ("/" not in command[0] and not shutil.which(command[0])):
            return _fail(127, f"cannot run {command[0]!r}: command not found; "
                              "check its name and $PATH")
        return _fail(126, f"cannot run {command[0]!r}: {e.strerror}; "
                          "check that it is an executable file")
    except subprocess.SubprocessError as e:
        return _fail(EXIT_ENGINE, f"cannot enter the namespace: {e}")
    finally:
        ns.close()
        shutdown()
