"""Case 2: data path. iperf3 TCP throughput and ping RTT between two namespaces.

pytest-vdens: two Namespace() on the embedded switch (a `vde_plug switch:// null://`).
pytest-vdens with capture: the same with Namespace(capture=True), both recording every
frame to a pcap file in the helper, as the pytest plugin does for every namespace by
default (--vdens-capture=on-failure); compared with the side without capture.
vdens: two `vdens vde://SW sh -c ...` on a `vde_plug switch:// null://` started here.
All sides run the same scripts (scripts.DP_SERVER / DP_CLIENT): configure with ip(8),
ping -c COUNT -i 0.002 (median of the per-packet times), then iperf3 -c -t SECS -J.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import scripts
from .common import Bench, VdePlugSwitch, kill_tree, log, median, need, wait_vdens


def parse(out: Path) -> dict[str, Any]:
    """Throughput (Mbit/s) and ping RTTs (ms) from the files the client script wrote."""
    res: dict[str, Any] = {"ok": False}
    try:
        rtts = [float(line.split("time=")[1].split()[0])
                for line in (out / "ping.txt").read_text().splitlines() if "time=" in line]
        data = json.loads((out / "iperf.json").read_text())
        mbps = data["end"]["sum_received"]["bits_per_second"] / 1e6
    except (OSError, ValueError, KeyError, IndexError) as e:
        err = ""
        for name in ("iperf.err", "iperf.json"):
            try:
                err += (out / name).read_text()[-500:]
            except OSError:
                pass
        res["detail"] = f"{e!r} {err}"
        return res
    res.update(ok=bool(rtts), mbps=mbps, rtt_ms=median(rtts), received=len(rtts))
    return res


def run_pv(bench: Bench, out: Path, secs: int, count: int, capture: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.worker", "datapath", "--out", str(out),
           "--secs", str(secs), "--count", str(count)] + (["--capture"] if capture else [])
    r = subprocess.run(cmd, env=bench.env, capture_output=True, text=True, timeout=secs + 180, check=False,
                       stdin=subprocess.DEVNULL)
    res = parse(out)
    if capture and res["ok"]:
        try:
            worker = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            worker = {}
        res.update(capture_files=worker.get("capture_files", 0), capture_bytes=worker.get("capture_bytes", 0))
        if res["capture_files"] != 2 or res["capture_bytes"] <= 2 * 24:  # 24: a pcap file's header
            res.update(ok=False, detail=f"capture on, but the two pcap files stayed empty: {worker}")
    if not res["ok"]:
        res["detail"] = f"{res.get('detail', '')} worker: {r.stdout[-800:]} {r.stderr[-800:]}"
    return res


def run_vdens(bench: Bench, out: Path, secs: int, count: int) -> dict[str, Any]:
    vdens = need("vdens", "vdens")
    with VdePlugSwitch(bench, "dp-sw") as sw:
        server = subprocess.Popen([vdens, sw.url, "sh", "-c", scripts.DP_SERVER],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=bench.env)
        client = subprocess.Popen([vdens, sw.url, "sh", "-c", scripts.dp_client(str(out), secs, count)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=bench.env)
        assert client.stderr is not None
        hangs = [name for name, proc in (("client", client), ("server", server))
                 if wait_vdens(proc, secs + 120) != "exited"]
        err = client.stderr.read()
        client.stderr.close()
        for proc in (client, server):
            kill_tree(proc)  # vdens does not forward signals: end what runs below it too
    res = parse(out)
    res["vdens_hangs"] = hangs  # see common.vdens_hung: not counted against a run that completed
    if not res["ok"]:
        res["detail"] = f"{res.get('detail', '')} vdens: {err[-800:] if err else ''} {hangs}"
    return res


SIDES = ("pv", "pv_cap", "vdens")  # pytest-vdens, the same with capture on, vdens


def run(bench: Bench, reps: int, secs: int, count: int) -> dict[str, Any]:
    need("iperf3", "iperf3")
    need("ping", "iputils-ping")
    sides: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    failures = []
    for rep in range(reps):
        order = SIDES[rep % len(SIDES):] + SIDES[:rep % len(SIDES)]  # rotated: each side first in turn
        for side in order:
            out = bench.dir(f"datapath/{side}-{rep}")
            if side == "vdens":
                res = run_vdens(bench, out, secs, count)
            else:
                res = run_pv(bench, out, secs, count, capture=side == "pv_cap")
            shutil.rmtree(out, ignore_errors=True)
            sides[side].append(res)
            if res["ok"]:
                log(f"  datapath rep {rep + 1}/{reps} {side}: {res['mbps']:.0f} Mbit/s, "
                    f"RTT {res['rtt_ms']:.3f} ms ({res['received']}/{count})")
            else:
                failures.append(f"{side} rep {rep + 1}: {res.get('detail', '')}")
                log(f"  datapath rep {rep + 1} {side} FAILED: {res.get('detail', '')[-800:]}")
    agg: dict[str, Any] = {"reps": reps, "secs": secs, "count": count, "failures": failures, "runs": sides}
    for side, runs in sides.items():
        ok = [r for r in runs if r["ok"]]
        agg[side] = {"mbps": median(r["mbps"] for r in ok), "rtt_ms": median(r["rtt_ms"] for r in ok),
                     "mbps_runs": [r["mbps"] for r in ok], "rtt_runs": [r["rtt_ms"] for r in ok]}
    return agg
