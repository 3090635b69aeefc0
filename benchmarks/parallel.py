"""Case 4: pytest-xdist. A generated suite of N tests that each use vdens_ns,
wall time with -n 2 against -n 0 (runs interleaved; speedup = median of per-pair ratios)."""

from __future__ import annotations

import math
from typing import Any

from . import overhead
from .common import Bench, log, median


def run(bench: Bench, n: int, reps: int) -> dict[str, Any]:
    d = bench.root / "suites" / f"xdist-{n}"
    overhead.generate(d, "fixture", n)
    walls: dict[str, list[float]] = {"n0": [], "n2": []}
    failures = []
    for rep in range(reps):
        order = ("n0", "n2") if rep % 2 == 0 else ("n2", "n0")
        for key in order:
            r = overhead.run_pytest(bench, d, n, "-n", key[1:])
            walls[key].append(r.wall if r.ok else math.nan)
            if not r.ok:
                failures.append(f"-n {key[1:]} rep {rep + 1}: {r.detail}")
                log(f"  xdist -n {key[1:]} FAILED: {r.detail[-800:]}")
        log(f"  xdist rep {rep + 1}/{reps}: -n 0 {walls['n0'][-1]:.2f}s, -n 2 {walls['n2'][-1]:.2f}s")
    ratios = [a / b for a, b in zip(walls["n0"], walls["n2"]) if not (math.isnan(a) or math.isnan(b))]
    return {"n": n, "reps": reps, "walls": walls, "n0": median(w for w in walls["n0"] if not math.isnan(w)),
            "n2": median(w for w in walls["n2"] if not math.isnan(w)), "speedup": median(ratios),
            "speedup_runs": ratios, "failures": failures}
