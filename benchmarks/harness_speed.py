"""Speed of the harness itself (issue: cold, warm-cache and overhead; against the per-process baseline).

For each profile:
- cold: ``python -m harness run`` with an empty cache (wall time of the whole command, seconds);
- warm: the same command again with the cache from the cold run;
- one-file change: one comment line appended to one model file (``--touch``, default model/rvm/decoder.py),
  the command again on the warm cache, the file restored: how many cells re-ran (their keys include the
  model's code hash) and how long it took;
- overhead: 1 - (sum of stage times / jobs) / harness wall time, from the cold run's environment.json
  (time the harness spends outside export/check/simplify/load/run/parity/latency/model work), and the same
  with latency counted as whole-machine time (``overhead_gated_frac``): while one worker times latency the
  others are stopped (harness/pool), so those seconds occupy every core, by design;
- baseline: one fresh ``python`` process per cell running benchmarks/baseline_export_validate.py (the
  official ``export_onnx.py --validate`` way). For large profiles a stride sample of cells is timed
  and the mean per cell is multiplied by the number of cells (said so in the output).

Writes ``<out>/harness_speed.json`` and ``<out>/harness_speed.md``.

    python benchmarks/harness_speed.py --profiles smoke ci --baseline-sample 30 --out reports/bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def _touch_run(base: list, out: Path, touch: Path, env) -> dict:
    """Append a comment line to ``touch``, run ``base`` on the warm cache, restore the file."""
    original = touch.read_bytes()
    try:
        touch.write_bytes(original + b"\n# harness_speed.py: one-file change (restored after the run)\n")
        secs, proc = _run(base + ["--out", str(out)], env)
    finally:
        touch.write_bytes(original)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"one-file-change run failed: {proc.stderr[-2000:]}")
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rerun = [r for r in recs if r.get("cache") != "result"]
    # a runtime missing on this machine (e.g. CUDA) gives a skip that is never cached: it runs every time
    real = [r for r in rerun if r["status"] != "skip"]
    return {"touched": str(touch.relative_to(ROOT)), "one_file_s": round(secs, 2), "one_file_rerun_cells": len(real),
            "one_file_rerun_skips": len(rerun) - len(real), "one_file_rerun_models": sorted({r.get("model", "?") for r in real})}


def time_baseline(cold_dir: Path, profile: str, sample: int, work: Path, env) -> dict:
    """The per-process baseline on the cells of a cold run (``cold_dir``: its results.jsonl and weights).

    The baseline script reproduces BGMv2 TorchScript / legacy ONNX cells (its scope); it is timed on an even
    spread of those the harness ran and extrapolated to every cell the harness ran (skipped cells, e.g. CUDA
    ones on a CPU machine, cost neither of them anything). ``baseline_failed`` lists cells the harness
    passed but the baseline did not validate (a broken measurement); cells failing in both (an export the
    rules predict to fail) are timed as they are, like a user would meet them."""
    recs = [json.loads(line) for line in (cold_dir / "results.jsonl").read_text().splitlines()]
    status = {r["cell_id"]: r["status"] for r in recs}
    ran = sorted(r["cell_id"] for r in recs if r["status"] != "skip")
    doable = sorted(r["cell_id"] for r in recs if r["status"] != "skip" and r.get("model", "bgmv2") == "bgmv2"
                    and r["exporter"] in ("torchscript", "onnx"))
    stride = max(1, len(doable) // sample) if sample else 1
    picked = doable[::stride][: sample or None]
    weights = next((w for w in (cold_dir / "weights-mobilenetv2.pth", cold_dir / "weights.pth") if w.exists()), None)
    if weights is None:
        raise SystemExit(f"no BGMv2 weights in {cold_dir}")
    per, failed = [], []
    for cid in picked:
        s, proc = _run([sys.executable, str(ROOT / "benchmarks" / "baseline_export_validate.py"), "--weights",
                        str(weights), "--cell", cid, "--profile", profile, "--out", str(work / cid)], env)
        per.append(s)
        if "validated" not in proc.stdout and status.get(cid) == "pass":
            failed.append(f"{cid}: {(proc.stdout + proc.stderr).strip()[-300:]}")
    total = sum(per) / len(per) * len(ran)
    return {"cells_ran": len(ran), "baseline_cells_timed": len(picked), "baseline_failed": failed,
            "baseline_mean_s_per_cell": round(sum(per) / len(per), 3), "baseline_total_s": round(total, 1),
            "baseline_extrapolated": len(picked) < len(ran)}


def bench_profile(profile: str, sample: int, work: Path, jobs: str, touch: Optional[Path] = None) -> dict:
    cache = work / f"cache-{profile}"
    env = dict(os.environ)
    env.pop("MATRIX_FAULTS", None)
    base = [sys.executable, "-m", "harness", "run", "--profile", profile, "--no-progress", "--cache-dir", str(cache)]
    if jobs:
        base += ["--jobs", jobs]
    cold_s, cold = _run(base + ["--out", str(work / f"{profile}-cold")], env)
    if cold.returncode not in (0, 1):
        raise SystemExit(f"cold run failed: {cold.stderr[-2000:]}")
    warm_s, warm = _run(base + ["--out", str(work / f"{profile}-warm")], env)
    one = _touch_run(base, work / f"{profile}-touched", touch, env) if touch else {}
    envj = json.loads((work / f"{profile}-cold" / "environment.json").read_text())
    run_wall = envj["run_wall_s"]
    overhead = 1.0 - (envj["stage_s"] / envj["jobs"]) / run_wall if run_wall else None
    cold_recs = [json.loads(line) for line in (work / f"{profile}-cold" / "results.jsonl").read_text().splitlines()]
    lat_s = sum((r.get("stage_times") or {}).get("latency", 0.0) for r in cold_recs)
    gated = 1.0 - ((envj["stage_s"] - lat_s) / envj["jobs"] + lat_s) / run_wall if run_wall else None
    statuses = {}
    for r in cold_recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    cells = [r["cell_id"] for r in cold_recs]
    base = time_baseline(work / f"{profile}-cold", profile, sample, work / "baseline", env)
    return {
        "profile": profile, "cells": len(cells), "jobs": envj["jobs"], "worker_threads": envj.get("worker_threads"),
        "cold_s": round(cold_s, 2), "warm_s": round(warm_s, 2), "harness_run_wall_s": round(run_wall, 2),
        "stage_s": round(envj["stage_s"], 2), "overhead_frac": round(overhead, 4) if overhead is not None else None,
        "latency_s": round(lat_s, 2), "overhead_gated_frac": round(gated, 4) if gated is not None else None,
        "statuses": statuses, "cpu": envj.get("cpu"), **one,
        "warm_result_hits": json.loads((work / f"{profile}-warm" / "environment.json").read_text())["cache"]["result_hits"],
        **base, "speedup_cold_vs_baseline": round(base["baseline_total_s"] / cold_s, 2),
        "speedup_warm_vs_cold": round(cold_s / warm_s, 1),
    }


def markdown(rows: list) -> list:
    """harness_speed.md's lines for the rows of harness_speed.json."""
    md = ["| profile | cells | jobs | cold s | warm s | one-file change | overhead (latency as whole-machine time) "
          "| baseline s (per-process) | cold speed-up vs baseline |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = (f" (mean of {r['baseline_cells_timed']} cells x {r['cells_ran']} run)" if r["baseline_extrapolated"]
                 else "")
        one = (f"{r['one_file_s']} s, {r['one_file_rerun_cells']} cells re-run ({r['touched']}; "
               f"+{r['one_file_rerun_skips']} uncached skips)" if "one_file_s" in r else "-")
        md.append(f"| {r['profile']} | {r['cells']} | {r['jobs']} | {r['cold_s']} | {r['warm_s']} | {one} | "
                  f"{100 * r['overhead_frac']:.1f} % ({100 * r['overhead_gated_frac']:.1f} %) | {r['baseline_total_s']}{extra} | "
                  f"{r['speedup_cold_vs_baseline']}x |")
    md.append("")
    md.append(f"Machine: {rows[0].get('cpu') if rows else '?'}; statuses of the cold runs: "
              + "; ".join(f"{r['profile']}: {r['statuses']}" for r in rows))
    return md


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["smoke", "ci"])
    p.add_argument("--baseline-sample", type=int, default=30, help="cells timed for the baseline (0 = all)")
    p.add_argument("--jobs", default="", help="--jobs for the harness (default: its own default)")
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--keep", default="", metavar="DIR",
                   help="copy each profile's cold run to DIR/<profile> (e.g. to refresh reports/baseline)")
    p.add_argument("--touch", default="model/rvm/decoder.py",
                   help="model file changed for the one-file-change run ('' to skip it)")
    a = p.parse_args()
    touch = (ROOT / a.touch) if a.touch else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="harness-speed-"))
    try:
        rows = [bench_profile(prof, a.baseline_sample, work, a.jobs, touch) for prof in a.profiles]
        if a.keep:
            for prof in a.profiles:
                dest = Path(a.keep) / prof
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(work / f"{prof}-cold", dest, symlinks=False,
                                ignore=shutil.ignore_patterns("artifacts", "logs", "tools", "weights*.pth", ".cache-private"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "harness_speed.json").write_text(json.dumps(rows, indent=2))
    md = markdown(rows)
    (out / "harness_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
