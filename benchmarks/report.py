"""Targets, the ratio table, docs/performance.md and its plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .overhead import LABELS


@dataclass
class Target:
    name: str
    value: float | None  # None: not measured in this run
    op: str  # "<=" or ">=", or "info": reported, never missed
    limit: float
    unit: str = "×"
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.value is not None and not math.isnan(self.value)

    @property
    def met(self) -> bool:
        if not self.measured:
            return False
        if self.op == "info":
            return True
        value = float(self.value)  # type: ignore[arg-type]
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def status(self) -> str:
        if self.op == "info":
            return "info" if self.measured else "not measured"
        return "not measured" if not self.measured else ("met" if self.met else "MISSED")

    def fmt(self) -> str:
        return "—" if not self.measured else f"{self.value:.3g}{self.unit}"

    def target(self) -> str:
        if self.op == "info":
            return "—"
        return f"{'≤' if self.op == '<=' else '≥'} {self.limit:g}{self.unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


CAP_MBPS = "2. iperf3 throughput with capture on (the plugin's default) / without"
CAP_RTT = "2. ping RTT (median) with capture on (the plugin's default) / without"


def targets(res: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    ov = res.get("overhead")
    if ov:
        n = str(ov["ns"][-1])
        anchor = ov["added_ms"]["anchor"][n]
        out.append(Target("1. added per test, vdens_ns fixture / vdens anchor",
                          _ratio(ov["added_ms"]["fixture"][n], anchor), "<=", 0.10))
        out.append(Target("1. added per test, marked test / vdens anchor",
                          _ratio(ov["added_ms"]["marked"][n], anchor), "<=", 0.20))
    else:
        out += [Target("1. added per test, vdens_ns fixture / vdens anchor", None, "<=", 0.10),
                Target("1. added per test, marked test / vdens anchor", None, "<=", 0.20)]
    dp = res.get("datapath")
    out.append(Target("2. iperf3 throughput, pytest-vdens / vdens",
                      _ratio(dp["pv"]["mbps"], dp["vdens"]["mbps"]) if dp else None, ">=", 1.0))
    out.append(Target("2. ping RTT (median), pytest-vdens / vdens",
                      _ratio(dp["pv"]["rtt_ms"], dp["vdens"]["rtt_ms"]) if dp else None, "<=", 1.0))
    cap = dp.get("pv_cap") if dp else None  # what the plugin's default capture costs: info only
    out.append(Target(CAP_MBPS, _ratio(cap["mbps"], dp["pv"]["mbps"]) if dp and cap else None, "info", 0))
    out.append(Target(CAP_RTT, _ratio(cap["rtt_ms"], dp["pv"]["rtt_ms"]) if dp and cap else None, "info", 0))
    sc = res.get("scale")
    hosts = sc["n"] if sc else 100
    out.append(Target(f"3. {hosts} hosts up and reachable, pytest-vdens / vdens",
                      _ratio(sc["pv"]["up"], sc["vdens"]["up"]) if sc else None, "<=", 0.5))
    out.append(Target(f"3. {hosts} hosts torn down, pytest-vdens / vdens",
                      _ratio(sc["pv"]["down"], sc["vdens"]["down"]) if sc else None, "<=", 0.5))
    rss = sc.get("rss") if sc else None
    if rss and rss.get("points"):
        last = rss["points"][-1]
        complete = rss["created"] >= rss["wanted"]
        out.append(Target(f"3. helper RSS at {rss['wanted']} namespaces",
                          last["helper_rss_kb"] / 1024 if complete else math.nan, "<=", 200,
                          " MB", "" if complete else f"only {rss['created']} could be made"))
        out.append(Target("3. no fd limit hit (making and closing them)",
                          1.0 if rss["fd_limit_hit"] else 0.0, "<=", 0, " hit",
                          "; ".join(rss["errors"])[:600]))
    else:
        out.append(Target("3. helper RSS at 1000 namespaces", None, "<=", 200, " MB"))
        out.append(Target("3. no fd limit hit", None, "<=", 0, " hit"))
    xd = res.get("xdist")
    out.append(Target("4. xdist -n 2 speedup over -n 0", xd["speedup"] if xd else None, ">=", 1.6))
    return out


def integrity(res: dict[str, Any], leftovers: list[str]) -> list[tuple[str, bool | None, str]]:
    """(what, ok or None if not checked, detail): work a user relies on was not skipped."""
    checks: list[tuple[str, bool | None, str]] = []
    ov = res.get("overhead")
    if ov:
        v = ov["verify"]
        checks.append(("isolation suite: each fixture/marked namespace has its own fresh "
                       "network stack; factory namespaces are distinct", v["ok"], v["detail"][-600:]))
        checks.append(("every timed test passed its own checks (own netns, vde0; marked: fresh)",
                       not ov["failures"], "; ".join(ov["failures"])[:600]))
    sc = res.get("scale")
    if sc:
        checks.append((f"scale: the {sc['n']} namespaces have distinct network namespaces and all "
                       "answered", sc["pv"].get("distinct_netns", False) and not sc["failures"],
                       "; ".join(sc["failures"])[:600]))
        rss = sc.get("rss", {})
        checks.append((f"rss: all {rss.get('created', '?')} namespaces alive at once have distinct "
                       "network namespaces", bool(rss.get("distinct_netns")), ""))
    dp = res.get("datapath")
    if dp:
        checks.append(("data path: every run completed", not dp["failures"], "; ".join(dp["failures"])[:600]))
    xd = res.get("xdist")
    if xd:
        checks.append(("xdist: every run passed", not xd["failures"], "; ".join(xd["failures"])[:600]))
    checks.append(("nothing left behind after each case (no process started by the benchmark, "
                   "no pytest-vdens-* dir)", not leftovers, "; ".join(leftovers)[:1500]))
    return checks


def _ms(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2f} ms"


def _s(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2f} s"


def _r(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.3g}"


def _mbps(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.0f} Mbit/s"


def _range(xs: list[float], fmt: str = "{:.2f}") -> str:
    xs = [x for x in xs if not math.isnan(x)]
    return "—" if not xs else f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def main_table(res: dict[str, Any]) -> list[list[str]]:
    """Rows: what, pytest-vdens, reference, ratio, target, status."""
    tg = {t.name: t for t in targets(res)}
    rows = [["Comparison", "pytest-vdens", "reference (vdens)", "ratio", "target", "status"]]
    ov = res.get("overhead")
    if ov:
        n = str(ov["ns"][-1])
        a = ov["added_ms"]
        anchor = a["anchor"][n]
        for key, tname in (("fixture", "1. added per test, vdens_ns fixture / vdens anchor"),
                           ("marked", "1. added per test, marked test / vdens anchor"),
                           ("session", None), ("floor", None), ("forked", None)):
            t = tg.get(tname) if tname else None
            label = LABELS[key].split(":")[0] if key == "floor" else LABELS[key]
            rows.append([f"1. added per test (N={n}): {label}", _ms(a[key][n]),
                         f"{_ms(anchor)} (anchor)", _r(_ratio(a[key][n], anchor)),
                         t.target() if t else "—", t.status() if t else "info"])
    dp = res.get("datapath")
    if dp:
        t = tg["2. iperf3 throughput, pytest-vdens / vdens"]
        rows.append(["2. iperf3 TCP throughput, 2 namespaces, one switch",
                     f"{dp['pv']['mbps']:.0f} Mbit/s", f"{dp['vdens']['mbps']:.0f} Mbit/s",
                     _r(t.value), t.target(), t.status()])
        t = tg["2. ping RTT (median), pytest-vdens / vdens"]
        rows.append([f"2. ping RTT, median of {dp['count']}", _ms(dp["pv"]["rtt_ms"]),
                     _ms(dp["vdens"]["rtt_ms"]), _r(t.value), t.target(), t.status()])
        cap = dp.get("pv_cap")
        if cap:
            t = tg[CAP_MBPS]
            rows.append(["2. iperf3 TCP throughput with capture on (the plugin's default)",
                         _mbps(cap["mbps"]), f"{_mbps(dp['pv']['mbps'])} (pytest-vdens, no capture)",
                         _r(t.value), t.target(), t.status()])
            t = tg[CAP_RTT]
            rows.append([f"2. ping RTT, median of {dp['count']}, with capture on (the plugin's default)",
                         _ms(cap["rtt_ms"]), f"{_ms(dp['pv']['rtt_ms'])} (pytest-vdens, no capture)",
                         _r(t.value), t.target(), t.status()])
    sc = res.get("scale")
    if sc:
        hosts = sc["n"]
        t = tg[f"3. {hosts} hosts up and reachable, pytest-vdens / vdens"]
        rows.append([f"3. {hosts} namespaces up and answering one host's ping", _s(sc["pv"]["up"]),
                     _s(sc["vdens"]["up"]) + " (parallel)", _r(t.value), t.target(), t.status()])
        t = tg[f"3. {hosts} hosts torn down, pytest-vdens / vdens"]
        rows.append([f"3. {hosts} namespaces torn down", _s(sc["pv"]["down"]), _s(sc["vdens"]["down"]),
                     _r(t.value), t.target(), t.status()])
        rss = sc.get("rss", {})
        for p in rss.get("points", []):
            last = p is rss["points"][-1]
            t = next((x for x in tg.values() if x.name.startswith("3. helper RSS")), None)
            rows.append([f"3. helper RSS at {p['n']} namespaces ({p['helper_fds']} fds open, "
                         f"limit {p['helper_nofile']})", f"{p['helper_rss_kb'] / 1024:.1f} MB", "—", "—",
                         t.target() if (t and last) else "—", t.status() if (t and last) else "info"])
        t = next((x for x in tg.values() if x.name.startswith("3. no fd limit")), None)
        if t and t.measured:
            rows.append([f"3. fd limit hit with {rss['created']} namespaces (create + close)",
                         "yes" if rss["fd_limit_hit"] else "no", "—", "—", "none", t.status()])
    xd = res.get("xdist")
    if xd:
        t = tg["4. xdist -n 2 speedup over -n 0"]
        rows.append([f"4. {xd['n']}-test vdens_ns suite, -n 2 vs -n 0",
                     f"{xd['n2']:.2f} s vs {xd['n0']:.2f} s", "—", f"{_r(t.value)}× faster",
                     t.target(), t.status()])
        if "plain_n0" in xd:
            rows.append([f"4. {xd['n']} plain tests (xdist's own cost), -n 2 vs -n 0",
                         f"{xd['plain_n2']:.2f} s vs {xd['plain_n0']:.2f} s", "—",
                         f"{_r(xd['plain_n0'] / xd['plain_n2'])}× faster", "—", "info"])
            rows.append(["4. the namespace work alone (vdens_ns suite − plain suite), -n 2 vs -n 0",
                         f"{xd['n2'] - xd['plain_n2']:.2f} s vs {xd['n0'] - xd['plain_n0']:.2f} s", "—",
                         f"{_r(xd['work_speedup'])}× faster", "—", "info"])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r in rows[1:]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def plot(res: dict[str, Any], path: Path) -> str | None:
    """Per-test overhead against suite size, one line per method; None, or why not."""
    ov = res.get("overhead")
    if not ov:
        return "case 1 was not run"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for key, style in (("anchor", "s-"), ("marked", "o-"), ("fixture", "^-"),
                       ("floor", "v--"), ("forked", "x--"), ("session", "d--")):
        xs = [n for n in ov["ns"] if not math.isnan(ov["added_ms"][key][str(n)])]
        ys = [ov["added_ms"][key][str(n)] for n in xs]
        ax.plot(xs, ys, style, label=LABELS[key])
    n = str(ov["ns"][-1])
    anchor = ov["added_ms"]["anchor"][n]
    if not math.isnan(anchor):
        ax.axhline(anchor / 10, color="grey", ls=":", lw=1)
        ax.axhline(anchor / 5, color="grey", ls="-.", lw=1)
        ax.text(ov["ns"][0], anchor / 10, " target (a): anchor/10", va="bottom", fontsize=8, color="grey")
        ax.text(ov["ns"][0], anchor / 5, " target (b): anchor/5", va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ov["ns"])
    ax.set_xticklabels([str(n) for n in ov["ns"]])
    ax.set_xlabel("tests in the suite (N)")
    ax.set_ylabel("added wall time per test vs a plain suite (ms)")
    ax.set_title(f"pytest-vdens per-test overhead (median of {ov['reps']} interleaved runs)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def markdown(res: dict[str, Any], meta: dict[str, Any], tg: list[Target],
             checks: list[tuple[str, bool | None, str]], plot_name: str | None,
             plot_error: str | None) -> str:
    L: list[str] = []
    w = L.append
    w("# Performance\n")
    w(f"Generated by `{meta['command']}` on {meta['date']} ({meta['mode']} run, {meta['duration']:.0f} s). "
      "Absolute times on a shared 2-core machine drift; what counts are the **ratios**, each "
      "measured in the same run with the compared variants interleaved, so that drift hits "
      "all of them alike. Regenerate with `python -m benchmarks` (see benchmarks/README.md).\n")
    w(f"Machine: {meta['machine']}. Load average before/after: {meta['load_before']} / "
      f"{meta['load_after']}. {meta['versions']}. pytest-vdens at {meta['revision']}.\n")
    w("## Targets\n")
    w("| Target | measured | target | status |")
    w("|---|---|---|---|")
    for t in tg:
        note = f" ({t.note[:160]}{'…' if len(t.note) > 160 else ''})".replace("\n", " ") if t.note else ""
        w(f"| {t.name}{note.replace('|', '/')} | {t.fmt()} | {t.target()} | {t.status()} |")
    w("")
    w("Work a user relies on was not skipped:\n")
    for what, ok, detail in checks:
        mark = "not checked" if ok is None else ("yes" if ok else "**NO**")
        detail = " ".join(detail.split())
        w(f"- {what}: {mark}{(' — ' + detail) if (detail and not ok) else ''}")
    w("")
    w("## Results\n")
    w(md_table(main_table(res)))
    w("")
    ov = res.get("overhead")
    if ov:
        w("## 1. Per-test overhead\n")
        w(f"Generated suites of N tests, each run as `python -m pytest -q -p no:cacheprovider` in a "
          f"subprocess; added time per test = (variant wall − plain wall of the same repetition) / N, "
          f"median over {ov['reps']} repetitions; in each repetition the variants run in a rotated "
          "order. Variants: (a) `def test(vdens_ns)`, which checks it is not the host's network "
          "namespace and has `vde0`; (b) `@pytest.mark.vdens`, the test checks inside that its "
          "network stack is its own and fresh (a per-netns sysctl still at its default, then "
          "changed); (c) the same marker with `scope=\"session\"`; (d) each test runs "
          "`vdens vde://SW true` with SW a `vde_plug switch:// null://` started for the run; "
          "(e) each test runs `unshare -rn true`; (f) each test runs in a child forked from pytest, "
          "its reports pickled back through a pipe, as (b) runs but without a namespace (a "
          "minimal pytest-forked as the suite's conftest).\n")
        header = ["variant"] + [f"N={n}" for n in ov["ns"]] + [f"ratio to anchor (N={ov['ns'][-1]})",
                                                               f"spread at N={ov['ns'][-1]}"]
        rows = [header]
        last = str(ov["ns"][-1])
        for key in ("fixture", "marked", "session", "anchor", "floor", "forked"):
            rows.append([LABELS[key]] + [_ms(ov["added_ms"][key][str(n)]) for n in ov["ns"]]
                        + [_r(_ratio(ov["added_ms"][key][last], ov["added_ms"]["anchor"][last])),
                           _range(ov["per_run_ms"][key][last]) + " ms"])
        plain = ov["walls"]["plain"]
        rows.append(["plain suite wall time (reference)"]
                    + [_s(sum(x for x in plain[str(n)]) / max(1, len(plain[str(n)]))) for n in ov["ns"]]
                    + ["", ""])
        w(md_table(rows))
        w("")
        if plot_name:
            w(f"![per-test overhead against suite size]({plot_name})\n")
        else:
            w(f"(No plot: {plot_error}.)\n")
    dp = res.get("datapath")
    if dp:
        w("## 2. Data path\n")
        w(f"Two namespaces on one switch of the same kind (`vde_plug switch:// null://`: "
          f"pytest-vdens's embedded switch, and one started for vdens), the same scripts on all "
          f"sides: `ping -c {dp['count']} -i 0.002` (median of the per-packet RTTs), then "
          f"`iperf3 -c -t {dp['secs']} -J` (received bits/s). A third side, pytest-vdens with "
          "capture on, is the same as pytest-vdens with `Namespace(capture=True)` for both: the "
          "helper records every frame of each interface to a pcap file, as the pytest plugin does "
          "for every namespace by default (`--vdens-capture=on-failure`, files of passing tests "
          f"deleted). {dp['reps']} repetition(s) per side, in an order rotated in each; medians.\n")
        cap = dp.get("pv_cap") or {"mbps": math.nan, "rtt_ms": math.nan, "mbps_runs": [], "rtt_runs": []}
        rows = [["", "pytest-vdens", "vdens", "ratio", "pytest-vdens with capture",
                 "capture on / off", "runs (pytest-vdens)", "runs (vdens)", "runs (with capture)"]]
        for what, key, runs, fmt, unit in (("throughput", "mbps", "mbps_runs", "{:.0f}", _mbps),
                                           ("RTT (median)", "rtt_ms", "rtt_runs", "{:.3f}", _ms)):
            rows.append([what, unit(dp["pv"][key]), unit(dp["vdens"][key]),
                         _r(_ratio(dp["pv"][key], dp["vdens"][key])), unit(cap[key]),
                         _r(_ratio(cap[key], dp["pv"][key]))]
                        + [", ".join(fmt.format(x) for x in d[runs]) for d in (dp["pv"], dp["vdens"], cap)])
        w(md_table(rows))
        w("")
    sc = res.get("scale")
    if sc:
        w("## 3. Scale\n")
        w(f"A checker host (set up untimed) on the network waits; then, timed, {sc['n']} namespaces "
          "are made, each with 10.1.x.y/16 on vde0, up, "
          "and the checker (benchmarks/checker.py, the same on both sides, one raw ICMP socket) "
          "pings every one until all have answered. pytest-vdens: `Namespace(addr=[...])` in a "
          "loop on the embedded switch (the helper sets the address and brings vde0 up, over "
          "netlink; checked after the timing); down = `close_all()` of them (one request kills "
          "every init, then waits until all are gone). "
          "vdens: each runs `ip addr add ... && ip link set vde0 up`. "
          "vdens: all started at once on a `vde_plug switch:// null://`; down = their commands end "
          "(stdin closed), until every vdens has exited. "
          f"{sc['reps']} repetition(s), alternating; medians.\n")
        rows = [["", "pytest-vdens", "vdens", "ratio"]]
        for k, what in (("created", "started (Namespace() returned / vdens spawned)"),
                        ("configured", "+ configured (ip commands done)"),
                        ("up", "+ every host answered the checker (= up)"),
                        ("down", "torn down")):
            rows.append([what, _s(sc["pv"][k]), _s(sc["vdens"][k]), _r(_ratio(sc["pv"][k], sc["vdens"][k]))])
        w(md_table(rows))
        w("")
        rss = sc.get("rss", {})
        if rss.get("points"):
            w(f"Helper memory and fds as namespaces accumulate (one interface each, embedded switch; "
              f"RLIMIT_NOFILE of the benchmark process: {rss.get('own_nofile')}):\n")
            rows = [["namespaces", "helper RSS", "helper fds", "helper fd limit", "fds in the user process",
                     "time to make them"]]
            for p in rss["points"]:
                rows.append([str(p["n"]), f"{p['helper_rss_kb'] / 1024:.1f} MB", str(p["helper_fds"]),
                             p["helper_nofile"], str(p["own_fds"]), _s(p["elapsed"])])
            w(md_table(rows))
            w(f"\nClosing all {rss['created']} took {rss['close_s']:.2f} s.")
        if rss.get("errors"):
            w("\n**Engine errors:**\n")
            for e in rss["errors"]:
                w(f"- `{e[:700]}`")
        w("")
    xd = res.get("xdist")
    if xd:
        w("## 4. pytest-xdist\n")
        w(f"A generated {xd['n']}-test suite, each test using `vdens_ns` (as variant (a)); wall time "
          f"with `-n 2` and `-n 0`, {xd['reps']} interleaved repetition(s); speedup = median of the "
          "per-repetition ratios.\n")
        rows = [["", "wall time (median)", "runs"],
                ["-n 0", _s(xd["n0"]), ", ".join(f"{x:.2f}" for x in xd["walls"]["n0"])],
                ["-n 2", _s(xd["n2"]), ", ".join(f"{x:.2f}" for x in xd["walls"]["n2"])],
                ["speedup", f"{_r(xd['speedup'])}×", ", ".join(f"{x:.2f}" for x in xd["speedup_runs"])]]
        if "plain_n0" in xd:
            rows += [["plain suite, -n 0", _s(xd["plain_n0"]),
                      ", ".join(f"{x:.2f}" for x in xd["walls"]["plain_n0"])],
                     ["plain suite, -n 2", _s(xd["plain_n2"]),
                      ", ".join(f"{x:.2f}" for x in xd["walls"]["plain_n2"])],
                     ["speedup of the namespace work (suite − plain)", f"{_r(xd['work_speedup'])}×",
                      ", ".join(f"{x:.2f}" for x in xd["work_speedup_runs"])]]
        w(md_table(rows))
        w("\nThe plain suite is the same number of tests with no namespace: what xdist itself "
          "costs to start and feed two workers. The last row is the speedup of what pytest-vdens "
          "adds, with that cost taken out.")
        w("")
    hangs = []
    if ov:
        count = sum(h["count"] for h in ov.get("vdens_hangs", []))
        total = ov["reps"] * sum(ov["ns"])
        hangs.append(f"case 1 anchor: {count} of {total} `vdens vde://SW true` ({100 * count / total:.1f}%)")
    for case, per in (("datapath", 2), ("scale", 101)):
        runs = (res.get(case) or {}).get("runs", {}).get("vdens", [])
        count = sum(len(r["vdens_hangs"]) if isinstance(r.get("vdens_hangs"), list)
                    else r.get("vdens_hangs", 0) for r in runs)
        if runs:
            hangs.append(f"case {2 if case == 'datapath' else 3}: {count} of about {per * len(runs)}")
    analysis = Path(__file__).with_name("analysis.md")  # written by hand, kept across runs
    if analysis.exists():
        w(analysis.read_text())
    w("## Notes\n")
    w("- vdens 0.2 can miss its command's exit (SIGCHLD is blocked only inside its `ppoll()`; one "
      "that arrives while it forwards a frame is discarded) and then waits forever. The benchmark "
      "detects that state, kills that vdens and counts it here: "
      + ("; ".join(hangs) if hangs else "not run") + ".")
    w("")
    w("## How to run\n")
    w("```sh\npip install -e '.[bench]'          # matplotlib, for the plot\n"
      "python -m benchmarks                # full run (~10 min), writes docs/performance.md + .png\n"
      "python -m benchmarks --quick        # smoke run (< 2 min), prints the table only\n"
      "python -m benchmarks --check        # exits 1 and names each missed target\n```\n")
    w("Needs Debian's vdens, vdeplug, iperf3 and util-linux (unshare), and user namespaces with "
      "access to /dev/net/tun.")
    return "\n".join(L) + "\n"
