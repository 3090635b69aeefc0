#!/usr/bin/env bash
# After a test run: fail if anything of pytest-vdens outlived it, for the current user.
#
#   scripts/leakcheck.sh --record FILE   # before the run: note the taps already there
#   scripts/leakcheck.sh [FILE]          # after it: look for leftovers (taps: new ones)
#
# Leftovers: processes named vdens-helper, vdens-zygote or vdens-init, vde_plug processes on a
# pytest-vdens path, processes started from pytest's temporary directories or
# carrying this run's $PYTEST_VDENS_RUN, /tmp/pytest-vdens-* directories and
# address leases (/tmp/vdens-leases-UID), and tun/tap devices in this network
# namespace that were not there before.
# Zombies are ignored, and everything gets a few seconds to go away: PID 1 may
# reap slowly, and helpers clean up after the test process is gone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

exec "$PYTHON" - "$@" <<'EOF'
import glob
import os
import pwd
import sys
import tempfile
import time

args = sys.argv[1:]
uid = os.getuid()
user = pwd.getpwuid(uid).pw_name
token = os.environ.get("PYTEST_VDENS_RUN", "")


def taps():
    return sorted(d for d in os.listdir("/sys/class/net")
                  if os.path.exists(f"/sys/class/net/{d}/tun_flags"))


if args[:1] == ["--record"]:
    with open(args[1], "w") as f:
        f.write("\n".join(taps()) + "\n")
    sys.exit(0)


def ancestors():
    pid, found = os.getpid(), set()
    while pid > 1:
        found.add(pid)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return found


def read(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def leftovers():
    found = []
    mine = ancestors()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = read(pid, "stat").decode(errors="replace")
        if not stat or int(pid) in mine:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        comm = read(pid, "comm").decode(errors="replace").strip()
        argv = read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        env = read(pid, "environ").split(b"\0")
        why = None
        if comm in ("vdens-helper", "vdens-zygote", "vdens-init"):
            why = comm
        elif comm == "vde_plug" and "pytest-vdens" in argv:
            why = "an embedded switch"
        elif f"/pytest-of-{user}/" in argv:
            why = "started from pytest's temporary directory"
        elif token and f"PYTEST_VDENS_RUN={token}".encode() in env:
            why = "started by this test run"
        if why:
            found.append(f"process {pid} ({why}): {argv or comm}")
    tmps = {"/tmp", tempfile.gettempdir()}
    names = ("pytest-vdens-*", f"vdens-leases-{uid}")  # helpers' directories, address leases
    for path in sorted({p for t in tmps for n in names for p in glob.glob(os.path.join(t, n))}):
        try:
            if os.lstat(path).st_uid == uid:
                found.append(f"directory {path}")
        except OSError:
            pass
    if args:
        with open(args[0]) as f:
            before = set(f.read().split())
        found += [f"tap {t} in this network namespace" for t in taps() if t not in before]
    return found


deadline = time.monotonic() + 3
while (left := leftovers()) and time.monotonic() < deadline:
    time.sleep(0.1)
if left:
    print(f"leakcheck: {len(left)} leftover(s) of the test run (user {user}):", file=sys.stderr)
    for item in left:
        print(f"  {item}", file=sys.stderr)
    sys.exit(1)
print(f"leakcheck: nothing left behind (user {user})")
EOF
