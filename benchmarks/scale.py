"""Case 3: scale. N hosts up on one network and answering one host's pings; teardown;
the helper's RSS at N and at a thousand namespaces.

Both sides: a checker host (scripts.checker, untimed set-up) waits for "go". Timed
"up": start N namespaces, each configured with `ip addr add 10.1.x.y/16 dev vde0 &&
ip link set vde0 up`, then "go", until the checker has had an echo reply from all N.
Timed "down": until every namespace is gone.

pytest-vdens (benchmarks.worker scale): Namespace(addr=[...]) N times in a loop on the
embedded switch: the helper gives the same address and brings vde0 up, as a user of
pytest-vdens would have it done (checked after the timing); down is close_all()
for all of them (one request kills every init, then waits until all are gone).
vdens: N `vdens vde://SW sh -c '...; echo up; exec cat >/dev/null'` started in
parallel on a `vde_plug switch:// null://`; up once each printed "up". down: close
their stdins (the shell ends, so vdens closes its tap and exits: killing vdens itself
would orphan its command) until every vdens has exited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from . import scripts
from .common import Bench, VdePlugSwitch, kill_tree, log, median, need, wait_vdens


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise ValueError(f"no result in worker output: {text[-800:]}")


def worker(bench: Bench, *args: str, timeout: float) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "benchmarks.worker", *args], env=bench.env,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       check=False)
    try:
        return last_json(r.stdout)
    except ValueError as e:
        return {"ok": False, "error": f"{e} {r.stderr[-1500:]}"}


def run_pv(bench: Bench, n: int) -> dict[str, Any]:
    return worker(bench, "scale", "--n", str(n), timeout=600)


def run_vdens(bench: Bench, n: int) -> dict[str, Any]:
    vdens = need("vdens", "vdens")
    with VdePlugSwitch(bench, "scale-sw") as sw:
        checker = subprocess.Popen([vdens, sw.url, "sh", "-c", scripts.checker(n)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env=bench.env)
        hosts: list[subprocess.Popen[str]] = []
        try:
            assert checker.stdin is not None and checker.stdout is not None
            ready = checker.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"checker did not start: {ready!r}")
            t0 = time.perf_counter()
            for i in range(1, n + 1):
                script = f"{scripts.host_up(i)} && echo up && exec cat >/dev/null"
                hosts.append(subprocess.Popen([vdens, sw.url, "sh", "-c", script],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              text=True, env=bench.env))
            t_created = time.perf_counter()
            config_failures = 0
            for h in hosts:
                assert h.stdout is not None
                config_failures += h.stdout.readline().strip() != "up"
            t_configured = time.perf_counter()
            checker.stdin.write("go\n")
            checker.stdin.flush()
            result = json.loads(checker.stdout.readline())
            t_reached = time.perf_counter()
            t1 = time.perf_counter()
            for h in hosts:
                assert h.stdin is not None
                h.stdin.close()
            hangs = sum(1 for h in hosts if wait_vdens(h, 60) != "exited")
            t_down = time.perf_counter()
            wait_vdens(checker, 10)
        finally:
            for proc in [checker, *hosts]:
                for f in (proc.stdin, proc.stdout):
                    if f is not None:
                        try:
                            f.close()
                        except OSError:
                            pass
                if proc.poll() is None:
                    kill_tree(proc)
    return {"up": t_reached - t0, "created": t_created - t0, "configured": t_configured - t0,
            "down": t_down - t1, "reach": result, "config_failures": config_failures,
            "vdens_hangs": hangs,
            "ok": result["answered"] == n and not config_failures}


def run(bench: Bench, n: int, reps: int, rss_counts: list[int]) -> dict[str, Any]:
    sides: dict[str, list[dict[str, Any]]] = {"pv": [], "vdens": []}
    failures = []
    for rep in range(reps):
        order = ("pv", "vdens") if rep % 2 == 0 else ("vdens", "pv")
        for side in order:
            try:
                res = (run_pv if side == "pv" else run_vdens)(bench, n)
            except Exception as e:  # a broken side must not stop the others
                res = {"ok": False, "error": repr(e)}
            sides[side].append(res)
            if res.get("ok"):
                log(f"  scale rep {rep + 1}/{reps} {side}: up {res['up']:.2f}s "
                    f"(created {res['created']:.2f}s, configured {res['configured']:.2f}s), "
                    f"down {res['down']:.2f}s")
            else:
                failures.append(f"{side} rep {rep + 1}: {json.dumps(res)[:1500]}")
                log(f"  scale rep {rep + 1} {side} FAILED: {json.dumps(res)[:1500]}")
            bench.check_leftovers(f"scale {side} rep {rep + 1}")
    agg: dict[str, Any] = {"n": n, "reps": reps, "failures": failures, "runs": sides}
    for side, runs in sides.items():
        ok = [r for r in runs if r.get("ok")]
        agg[side] = {k: median(r[k] for r in ok) for k in ("up", "created", "configured", "down")}
        agg[side]["up_runs"] = [r["up"] for r in ok]
        agg[side]["down_runs"] = [r["down"] for r in ok]
    pv_ok = [r for r in sides["pv"] if r.get("ok")]
    agg["pv"]["helper_rss_kb"] = median(r["helper_rss_kb"] for r in pv_ok)
    agg["pv"]["distinct_netns"] = all(r.get("distinct_netns") for r in pv_ok) and bool(pv_ok)
    log(f"  rss: {len(rss_counts)} points up to {rss_counts[-1]} namespaces ...")
    agg["rss"] = worker(bench, "rss", "--counts", ",".join(map(str, rss_counts)), timeout=1200)
    log(f"  rss: {json.dumps(agg['rss'])[:1500]}")
    bench.check_leftovers(f"scale: after {rss_counts[-1]} namespaces (rss)")
    return agg
