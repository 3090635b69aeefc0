"""`python -m benchmarks`: run every comparison of issue 5 side by side, print the ratio
table, write docs/performance.md (+ a PNG plot), and with --check exit 1 naming each
missed target."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import datapath, overhead, parallel, report, scale
from .common import REPO, Bench, log

CASES = ("overhead", "datapath", "scale", "xdist")

@dataclass
class Config:
    ns: list[int]  # suite sizes of case 1; the last is the one the targets use
    overhead_reps: int
    dp_reps: int
    dp_secs: int
    dp_count: int
    scale_n: int
    scale_reps: int
    rss_counts: list[int]
    xdist_n: int
    xdist_reps: int


FULL = Config(ns=[25, 50, 100, 200], overhead_reps=5, dp_reps=3, dp_secs=3, dp_count=200,
              scale_n=100, scale_reps=3, rss_counts=[100, 1000], xdist_n=400, xdist_reps=5)
QUICK = Config(ns=[10, 30], overhead_reps=3, dp_reps=1, dp_secs=2, dp_count=200,
               scale_n=100, scale_reps=1, rss_counts=[100, 300], xdist_n=200, xdist_reps=1)


def _sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def meta_info() -> dict[str, Any]:
    versions = _sh("dpkg-query", "-W", "-f", "${Package} ${Version}, ", "vdens", "vdeplug",
                   "libvdeplug2", "iperf3").rstrip(", ")
    rev = _sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    dirty = _sh("git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no")
    try:
        import pytest_vdens  # noqa: F401  (where it comes from, not its helper)
        where = os.path.dirname(importlib.util.find_spec("pytest_vdens").origin)  # type: ignore[union-attr, arg-type]
    except Exception:
        where = "?"
    return {
        "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}",
        "versions": f"Debian packages: {versions or '?'}",
        "revision": f"{rev or '?'}{' + uncommitted changes' if dirty else ''} ({where})",
        "load_before": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


def check_setup() -> None:
    eps = importlib.metadata.entry_points(group="pytest11")
    if not any(ep.value.startswith("pytest_vdens") for ep in eps):
        raise SystemExit("benchmarks: the pytest-vdens plugin is not installed for "
                         f"{sys.executable}; run: pip install -e '.[bench]'")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smaller N and fewer repetitions: a smoke run (< 2 min); writes no file "
                        "unless --out is given")
    p.add_argument("--check", action="store_true",
                   help="assert the targets: exit 1 naming each missed target (or skipped work)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report to write, with a PNG plot beside it "
                        "(default for a full run: docs/performance.md; '-' for none)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    p.add_argument("--reps", type=int, default=None, help="repetitions of case 1 (default 5; quick 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (suites, logs)")
    args = p.parse_args(argv)

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg = replace(cfg, overhead_reps=args.reps)
    out: Path | None = args.out
    if out is None and not args.quick:
        out = REPO / "docs" / "performance.md"
    if out is not None and str(out) == "-":
        out = None

    check_setup()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    meta = meta_info()
    started = time.time()
    bench = Bench(keep=args.keep)
    log(f"benchmarks: {'quick' if args.quick else 'full'} run of {', '.join(cases)}; temp dir {bench.root}")
    res: dict[str, Any] = {}
    crashed: list[str] = []
    try:
        for case in cases:
            t0 = time.monotonic()
            log(f"== {case}")
            try:
                if case == "overhead":
                    res["overhead"] = overhead.run(bench, cfg.ns, cfg.overhead_reps)
                    bench.check_leftovers("overhead")
                    res["overhead"]["verify"] = overhead.verify(bench, args.quick)
                    log(f"  isolation suite: {'ok' if res['overhead']['verify']['ok'] else 'FAILED'}")
                elif case == "datapath":
                    res["datapath"] = datapath.run(bench, cfg.dp_reps, cfg.dp_secs, cfg.dp_count)
                elif case == "scale":
                    res["scale"] = scale.run(bench, cfg.scale_n, cfg.scale_reps, cfg.rss_counts)
                elif case == "xdist":
                    res["xdist"] = parallel.run(bench, cfg.xdist_n, cfg.xdist_reps)
            except Exception:
                crashed.append(f"{case}: {traceback.format_exc()}")
                log(f"  case {case} CRASHED:\n{traceback.format_exc()}")
                res.pop(case, None)
            bench.check_leftovers(case)
            log(f"  ({time.monotonic() - t0:.0f} s)")
    finally:
        bench.check_leftovers("end of run")
        strays = bench.global_new_dirs()
        bench.close()

    meta.update(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), duration=time.time() - started,
                mode="quick" if args.quick else "full",
                command="python -m benchmarks" + (" --quick" if args.quick else ""),
                load_after=" ".join(open("/proc/loadavg").read().split()[:3]))
    tg = report.targets(res)
    checks = report.integrity(res, bench.leftovers)
    print()
    print(report.text_table(report.main_table(res)))
    print()
    for t in tg:
        note = f" — {t.note}" if t.note else ""
        print(f"  {t.status():12} {t.name}: {t.fmt()} (target {t.target()}){note}")
    for what, ok, detail in checks:
        if ok is not None:
            print(f"  {'ok' if ok else 'FAILED':12} {what}{(': ' + detail) if (detail and not ok) else ''}")
    if strays:
        print(f"  note: /tmp/pytest-vdens-* dirs appeared during the run outside the benchmark's "
              f"TMPDIR (another user of this machine?): {', '.join(strays)}")
    for c in crashed:
        print(f"  CRASHED {c}")

    if out is not None:
        png = out.with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        perr = report.plot(res, png)
        out.write_text(report.markdown(res, meta, tg, checks, png.name if perr is None else None, perr))
        print(f"\nwrote {out}" + (f" and {png}" if perr is None else f" (no plot: {perr})"))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": res, "leftovers": bench.leftovers},
                                        indent=1, default=str))

    if args.check:
        missed = [t for t in tg if t.measured and not t.met]
        broken = [what for what, ok, _ in checks if ok is False]
        for t in missed:
            print(f"MISSED: {t.name}: {t.fmt()} (target {t.target()}){' — ' + t.note if t.note else ''}",
                  file=sys.stderr)
        for what in broken:
            print(f"FAILED: {what}", file=sys.stderr)
        for c in crashed:
            print(f"FAILED: case {c.splitlines()[0]}", file=sys.stderr)
        return 1 if (missed or broken or crashed) else 0
    return 1 if crashed else 0
