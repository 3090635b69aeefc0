"""The pyvdens command, run as a user would: `python -m pytest_vdens ARGS`."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

PYVDENS = [sys.executable, "-m", "pytest_vdens"]

SIGNAL_COUNTER = r"""
import signal, sys, time
got = []
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda n, f: got.append(signal.Signals(n).name))
print("ready", flush=True)
if sys.argv[1:] == ["read"]:
    print("read", sys.stdin.readline().strip(), "from a tty:", sys.stdin.isatty(), flush=True)
deadline = time.monotonic() + 20
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.3)  # a second copy of the signal would arrive by now
print("got", *got, flush=True)
sys.exit(40 + len(got))
"""


def pyvdens(*args: str, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYVDENS, *args], capture_output=True, text=True, input=input,
                          env=env, timeout=60)


# vdens 0.2 may wait forever when its command exits while it is not in ppoll():
# it blocks SIGCHLD only there, so the signal is lost. Its commands here first sleep.
SETTLE = "sleep 0.2; "


def vdens(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["vdens", *args], capture_output=True, text=True, timeout=60)


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.stderr.startswith("pyvdens: ") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr


def processes_with_arg(arg: str) -> list[int]:
    """Live processes that have `arg` as one of their arguments."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if arg.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def on_a_terminal(argv: list[str], keys: list[bytes]) -> tuple[str, int]:
    """Run argv on a new pseudo-terminal, type `keys` once it prints 'ready'."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not data:
                    break
                out += data
                if b"ready" in out and keys:
                    for key in keys:
                        os.write(master, key)
                        time.sleep(0.2)
                    keys = []
    finally:
        os.close(master)
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


# -- exit status ---------------------------------------------------------------


def test_the_command_exit_status_is_kept_where_vdens_loses_it(vde_switch: str) -> None:
    assert pyvdens("-", "sh", "-c", "exit 7").returncode == 7
    assert pyvdens(vde_switch, "sh", "-c", "exit 7").returncode == 7
    # vdens 0.2 keeps it only without a network, where it execs the command itself
    assert vdens("-", "sh", "-c", "exit 7").returncode == 7
    assert vdens(vde_switch, "sh", "-c", SETTLE + "exit 7").returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_command_killed_by_a_signal_gives_128_plus_its_number(vde_switch: str,
                                                                sig: signal.Signals) -> None:
    script = f"kill -{sig.name[3:]} $$"
    assert pyvdens(vde_switch, "sh", "-c", script).returncode == 128 + sig
    assert vdens(vde_switch, "sh", "-c", SETTLE + script).returncode == 0


# -- signals and the terminal ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_a_signal_sent_to_pyvdens_reaches_the_command_once(sig: signal.Signals) -> None:
    proc = subprocess.Popen([*PYVDENS, "-", sys.executable, "-c", SIGNAL_COUNTER],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=30)
    assert out == f"got {sig.name}\n"
    assert proc.returncode == 41


def test_on_a_terminal_the_command_reads_it_and_gets_one_ctrl_c() -> None:
    out, status = on_a_terminal([*PYVDENS, "-", sys.executable, "-c", SIGNAL_COUNTER, "read"],
                                [b"hello\n", b"\x03"])
    assert "read hello from a tty: True" in out, out
    assert "got SIGINT\r\n" in out, out
    assert status == 41


def test_ctrl_c_ends_a_command_that_does_not_catch_it() -> None:
    out, status = on_a_terminal([*PYVDENS, "-", "sh", "-c", "echo ready; exec sleep 30"],
                                [b"\x03"])
    assert status == 128 + signal.SIGINT, out


# -- command line ---------------------------------------------------------------------


def test_everything_after_the_network_is_the_command_untouched() -> None:
    show = ["sh", "-c", 'printf "%s|" "$@"', "sh", "-l", "--iface", "eth", "--", "-s"]
    assert pyvdens("-", *show).stdout == "-l|--iface|eth|--|-s|"
    assert pyvdens("-i", "eth", "--", "-", *show).stdout == "-l|--iface|eth|--|-s|"
    assert pyvdens("-m", "-", "--", *show).stdout == "-l|--iface|eth|--|-s|"


@pytest.mark.parametrize("shell, expected", [("/bin/bash", "/bin/bash"), (None, "/bin/sh")])
def test_without_a_command_it_runs_SHELL(shell: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHELL"}
    if shell:
        env["SHELL"] = shell
    out = pyvdens("-", env=env, input="echo shell=$0 uid=$(id -u); exit 5\n")
    assert out.stdout == f"shell={expected} uid={os.getuid()}\n"
    assert out.returncode == 5


def test_clone_and_unshare_are_accepted_for_compatibility() -> None:
    for flags in (["-c"], ["-u"], ["--clone", "--unshare"]):
        assert pyvdens(*flags, "-", "true").returncode == 0


def test_help_shows_both_forms_and_exits_0() -> None:
    out = pyvdens("--help")
    assert out.returncode == 0
    assert "pyvdens [options] [vde_network [command [args]]]" in out.stdout
    assert "pyvdens -m|--multi [options] vde_network [vde_network ...]" in out.stdout
    assert "--drop-caps" in out.stdout and "VDE_RESOLVADDR" in out.stdout


@pytest.mark.parametrize("args, env, words", [
    (["-x", "-", "true"], {}, ["unknown option", "'-x'", "--help"]),
    (["--no-such-option", "-", "true"], {}, ["'--no-such-option'"]),
    (["-i"], {}, ["-i/--iface", "expected one argument"]),
    (["-m"], {}, ["-m/--multi needs at least one vde_network"]),
    (["-m", "-", "vde:///tmp/sw"], {}, ["'-'", "remove it"]),
    (["-R", "9.9.9.9,not-an-ip", "-", "true"], {},
     ["-R/--resolvaddr", "'not-an-ip'", "9.9.9.9"]),
    (["-R", ",", "-", "true"], {}, ["-R/--resolvaddr", "','", "names no address"]),
    (["-", "true"], {"VDE_RESOLVADDR": "bogus"}, ["VDE_RESOLVADDR", "'bogus'"]),
    (["-r", "/no/such/resolv.conf", "-", "true"], {},
     ["-r/--resolvconf", "'/no/such/resolv.conf'"]),
    (["-", "true"], {"VDE_RESOLVCONF": "/no/such"}, ["VDE_RESOLVCONF", "'/no/such'"]),
    (["-i", "averyverylongname", "-", "true"], {},
     ["-i/--iface", "'averyverylongname'", "shorter"]),
    (["-i", "a/b", "-", "true"], {}, ["-i/--iface", "'a/b'"]),
])
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(args: list[str], env: dict[str, str],
                                                         words: list[str]) -> None:
    out = pyvdens(*args, env={**os.environ, **env})
    assert out.returncode == 2, out.stderr
    message = one_line_error(out)
    for word in words:
        assert word in message


@pytest.mark.parametrize("url, words", [
    ("foo://bar", ["'foo://bar'", "libvdeplug_foo.so"]),
    ("vde:///no/such/switch", ["'vde:///no/such/switch'", "vde_switch -s /no/such/switch"]),
])
def test_a_network_that_cannot_be_opened_is_an_engine_error_exit_1(url: str,
                                                                   words: list[str]) -> None:
    out = pyvdens(url, "true")
    assert out.returncode == 1
    message = one_line_error(out)
    for word in words:
        assert word in message


@pytest.mark.parametrize("command, status", [("no-such-command-xyz", 127), ("/etc/hostname", 126)])
def test_a_command_that_cannot_be_run_is_126_or_127(command: str, status: int) -> None:
    out = pyvdens("-", command)
    assert out.returncode == status
    assert repr(command) in one_line_error(out)


def helpers_of(parent: int) -> list[int]:
    """Live pytest-vdens helpers started by process `parent`."""
    found = []
    for pid in processes_with_arg("pytest_vdens.helper"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[-2:-1] == [str(parent).encode()]:
                    found.append(pid)
        except OSError:
            pass
    return found


def test_nothing_started_inside_outlives_pyvdens_unlike_vdens() -> None:
    mine, theirs = "1234.25", "1234.75"  # unique sleep arguments to find them
    script = f"sleep {mine} >/dev/null 2>&1 & echo started"
    proc = subprocess.Popen([*PYVDENS, "-", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "started\n"
    assert helpers_of(proc.pid) != []
    assert proc.wait(30) == 0
    assert processes_with_arg(mine) == []
    assert helpers_of(proc.pid) == []
    vdens("-", "sh", "-c", f"sleep {theirs} >/dev/null 2>&1 &")
    left = processes_with_arg(theirs)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left, "vdens 0.2 leaves background processes running"
