"""Case 4: pytest-xdist. A generated suite of N tests that each use vdens_ns,
wall time with -n 2 against -n 0 (runs interleaved; speedup = median of per-pair ratios).

The same N plain tests, run likewise, show what xdist itself costs (starting
and feeding its workers): the speedup of the namespace work alone is the
namespace suite's time over the plain one's, -n 0 against -n 2.
"""

from __future__ import annotations

import math
from typing import Any

from . import overhead
from .common import Bench, log, median

KEYS = ("n0", "n2", "plain_n0", "plain_n2")


def run(bench: Bench, n: int, reps: int) -> dict[str, Any]:
    dirs = {"": bench.root / "suites" / f"xdist-{n}", "plain_": bench.root / "suites" / f"xdist-plain-{n}"}
    overhead.generate(dirs[""], "fixture", n)
    overhead.generate(dirs["plain_"], "plain", n)
    walls: dict[str, list[float]] = {k: [] for k in KEYS}
    failures = []
    for rep in range(reps):
        order = KEYS if rep % 2 == 0 else KEYS[::-1]
        for key in order:
            kind, workers = key[:-2], key[-1]
            r = overhead.run_pytest(bench, dirs[kind], n, "-n", workers)
            walls[key].append(r.wall if r.ok else math.nan)
            if not r.ok:
                failures.append(f"{kind or 'vdens_ns '}-n {workers} rep {rep + 1}: {r.detail}")
                log(f"  xdist {kind}-n {workers} FAILED: {r.detail[-800:]}")
        log(f"  xdist rep {rep + 1}/{reps}: -n 0 {walls['n0'][-1]:.2f}s, -n 2 {walls['n2'][-1]:.2f}s; "
            f"plain -n 0 {walls['plain_n0'][-1]:.2f}s, -n 2 {walls['plain_n2'][-1]:.2f}s")

    def ratios(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y)) and y > 0]

    work0 = [f - p for f, p in zip(walls["n0"], walls["plain_n0"])]
    work2 = [f - p for f, p in zip(walls["n2"], walls["plain_n2"])]
    out: dict[str, Any] = {"n": n, "reps": reps, "walls": walls, "failures": failures,
                           "speedup": median(ratios(walls["n0"], walls["n2"])),
                           "speedup_runs": ratios(walls["n0"], walls["n2"]),
                           "work_speedup": median(ratios(work0, work2)),
                           "work_speedup_runs": ratios(work0, work2)}
    for key in KEYS:
        out[key] = median(w for w in walls[key] if not math.isnan(w))
    return out
