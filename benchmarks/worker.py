"""The pytest-vdens side of cases 2 and 3, in a process of its own (so: a fresh helper).

`python -m benchmarks.worker datapath|scale|rss ...`; the last line of stdout is a JSON
result. The vdens side lives in datapath.py and scale.py and runs the same scripts.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import pytest_vdens
from pytest_vdens import Namespace, client, close_all

from . import scripts
from .common import fd_count, nofile_limit, vm_rss_kb

FD_LIMIT_SIGNS = ("Too many open files", "out of range in select", "EMFILE", "ENFILE",
                  f"[Errno {errno.EMFILE}]", f"[Errno {errno.ENFILE}]")


def short(e: BaseException) -> str:
    """An engine error in one line: its first line, and where it was raised (helper tracebacks)."""
    text = str(e)
    first = text.splitlines()[0] if text else ""
    where = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
    return f"{type(e).__name__}: {first}" + (f" [at {where[-1]}]" if where else "")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def datapath(args: argparse.Namespace) -> dict[str, Any]:
    """With --capture, both namespaces record every frame (as the plugin does by default)."""

    def capture_bytes(ns: Namespace) -> int:  # both halves of each interface's ring
        return sum(os.stat(f).st_size for path in ns.captures.values()
                   for f in (path, path + ".old") if os.path.exists(f))

    with Namespace(capture=args.capture) as server_ns, Namespace(capture=args.capture) as client_ns:
        server = server_ns.popen(["sh", "-c", scripts.DP_SERVER], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            r = client_ns.run(["sh", "-c", scripts.dp_client(args.out, args.secs, args.count)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=args.secs + 120)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        # before close() deletes them: proof that the frames were recorded
        captured = {"capture_files": len(server_ns.captures) + len(client_ns.captures),
                    "capture_bytes": capture_bytes(server_ns) + capture_bytes(client_ns)}
    return {"rc": r.returncode, "stderr": r.stderr[-1000:], **captured}


def scale(args: argparse.Namespace) -> dict[str, Any]:
    n = args.n
    out: dict[str, Any] = {}
    checker_ns = Namespace()
    try:
        checker = checker_ns.popen(["sh", "-c", scripts.checker(n)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        assert checker.stdin is not None and checker.stdout is not None
        ready = checker.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"checker did not start: {ready!r}")
        spaces: list[Namespace] = []
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            # as a user would: the helper gives the address and brings vde0 up
            spaces.append(Namespace(addr=[f"{scripts.host_ip(i)}/16"]))
        t_created = t_configured = time.perf_counter()  # configured as made
        checker.stdin.write("go\n")
        checker.stdin.flush()
        result = json.loads(checker.stdout.readline())
        t_reached = time.perf_counter()
        bad = [ns.run(["sh", "-c", f"ip -4 -o addr show dev vde0 up | grep -q 'inet {scripts.host_ip(i)}/16'"]
                      ).returncode for i, ns in enumerate(spaces, 1)]  # untimed: each got its address
        helper = client.helper()
        out.update(helper_rss_kb=vm_rss_kb(helper.pid), helper_fds=fd_count(helper.pid))
        nets = {os.readlink(f"/proc/{ns.init_pid}/ns/net") for ns in spaces}
        out["distinct_netns"] = len(nets) == n and os.readlink("/proc/self/ns/net") not in nets
        t1 = time.perf_counter()
        close_all(spaces)  # every init killed at once, then until all are gone
        t_down = time.perf_counter()
        checker.wait(10)
    finally:
        checker_ns.close()
    out.update(up=t_reached - t0, created=t_created - t0, configured=t_configured - t0,
               down=t_down - t1, reach=result, config_failures=sum(1 for b in bad if b))
    out["ok"] = (result["answered"] == n and out["distinct_netns"] and not out["config_failures"])
    return out


def rss(args: argparse.Namespace) -> dict[str, Any]:
    """Helper RSS and fds as namespaces accumulate; any fd limit hit is an engine bug."""
    counts = sorted(int(c) for c in args.counts.split(","))
    spaces: list[Namespace] = []
    points: list[dict[str, Any]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    try:
        for _ in range(counts[-1]):
            spaces.append(Namespace())
            if len(spaces) in counts:
                pid = client.helper().pid
                points.append({"n": len(spaces), "helper_rss_kb": vm_rss_kb(pid),
                               "helper_fds": fd_count(pid), "helper_nofile": nofile_limit(pid),
                               "own_fds": fd_count(os.getpid()),
                               "elapsed": time.perf_counter() - t0})
                print(json.dumps({"progress": points[-1]}), file=sys.stderr, flush=True)
    except Exception as e:
        errors.append(f"creating namespace {len(spaces) + 1}: {short(e)}")
    t_created = time.perf_counter() - t0
    nets = {os.readlink(f"/proc/{ns.init_pid}/ns/net") for ns in spaces}
    distinct = len(nets) == len(spaces) and os.readlink("/proc/self/ns/net") not in nets
    t1 = time.perf_counter()
    close_errors = 0
    for k, ns in enumerate(spaces, 1):
        try:
            ns.close()
        except Exception as e:
            close_errors += 1
            if close_errors == 1:
                errors.append(f"closing namespace {k} (the first that failed): {short(e)}")
    t_closed = time.perf_counter() - t1
    if close_errors > 1:
        errors.append(f"closing: {close_errors} of {len(spaces)} close() calls failed")
    fd_limit = [e for e in errors if any(s in e for s in FD_LIMIT_SIGNS)]
    return {"points": points, "created": len(spaces), "wanted": counts[-1],
            "create_s": t_created, "close_s": t_closed, "errors": errors,
            "fd_limit_hit": bool(fd_limit), "distinct_netns": distinct,
            "own_nofile": nofile_limit(os.getpid())}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("datapath")
    d.add_argument("--out", required=True)
    d.add_argument("--secs", type=int, default=3)
    d.add_argument("--count", type=int, default=200)
    d.add_argument("--capture", action="store_true",
                   help="both namespaces record every frame to a pcap file (Namespace(capture=True))")
    s = sub.add_parser("scale")
    s.add_argument("--n", type=int, default=100)
    r = sub.add_parser("rss")
    r.add_argument("--counts", default="100,1000")
    args = p.parse_args()
    raise_nofile()
    try:
        result = {"datapath": datapath, "scale": scale, "rss": rss}[args.cmd](args)
    except Exception as e:
        result = {"ok": False, "error": repr(e)[:2000]}
    finally:
        pytest_vdens.shutdown()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
