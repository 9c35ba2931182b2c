"""Scale-out: ``run --shard K/N`` runs one cost-balanced part of a profile; ``python -m harness merge OUT
DIR...`` combines the N parts into one report, record for record the same as a single-machine run.

The split (:func:`split`) is a pure function of the selected cells, N and an optional cost file, so every
shard machine computes the same partition without talking to the others:

- cells that share an export (:func:`harness.pool.coordinator.group_cells`) stay together, so no artifact
  is exported twice;
- a group's expected cost is the sum of its cells' ``cell_s`` in ``--shard-costs FILE`` (a results.jsonl
  of an earlier run, e.g. ``reports/baseline/results.jsonl``; the same file on every shard), else
  :func:`harness.pool.schedule.expected_cost`'s table (seconds measured on the 2-core CI machine: one export per group, a few
  seconds per runtime cell, ~0 for a CUDA cell, which a CPU machine skips);
- groups are dealt longest first to the shard with the least expected work (LPT; ties to the lowest
  index), so one AOTInductor compile does not land on a shard that is already full.

A cell's record does not depend on which shard ran it (same key, same cache format: a CI cache restored
into any shard serves it). ``merge`` checks that the directories are shards 1..N of one plan (same
``plan_fingerprint``, every cell exactly once) and refuses anything else.
Torch-free.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .cache import link_or_copy
from .pool.coordinator import group_cells
from .pool.schedule import longest_first
from .runs import UNEXPECTED_STATUSES, read_records
from .report import write_report


class ShardError(ValueError):
    """A bad ``--shard`` value, or directories that are not the shards of one plan (names the problem)."""


def parse_shard(text: str) -> Tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; K is 1-based. Raises :class:`ShardError` for anything but ``1 <= K <= N``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ShardError(f"--shard {text!r}: expected K/N, e.g. 1/3")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard {text!r}: K must be between 1 and N (N >= 1)")
    return k, n


def read_costs(path: Optional[str]) -> Dict[str, float]:
    """``{cell_id: cell_s}`` from a results.jsonl (``--shard-costs``); {} without a path. Raises
    :class:`ShardError` naming an unreadable file."""
    if not path:
        return {}
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    try:
        out = {}
        for line in p.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("cell_s") is not None:
                    out[r["cell_id"]] = float(r["cell_s"])
        return out
    except (OSError, ValueError) as e:
        raise ShardError(f"--shard-costs {path!r}: not a readable results.jsonl ({e})") from None


def split(cells: Sequence[Any], n: int, costs: Optional[Dict[str, float]] = None) -> List[List[Any]]:
    """``n`` lists of cells (see the module docstring); deterministic for the same inputs."""
    return split_loads(cells, n, costs)[0]


def split_loads(cells: Sequence[Any], n: int, costs: Optional[Dict[str, float]] = None) -> Tuple[List[List[Any]], List[float]]:
    """:func:`split` and each part's expected seconds."""
    groups = group_cells(sorted(cells, key=lambda c: c.cell_id))  # the same split whatever the input order
    loads = [0.0] * n
    parts: List[List[Any]] = [[] for _ in range(n)]
    for cost, g in longest_first(groups, costs):
        k = min(range(n), key=lambda j: (loads[j], j))
        loads[k] += cost
        parts[k].extend(g)
    return parts, loads


def shard_plan(plan: Any, shard: Tuple[int, int], costs: Optional[Dict[str, float]] = None) -> Tuple[Any, Dict[str, Any]]:
    """``(plan narrowed to shard K of N, info)``; ``info`` goes to run.json and environment.json:
    ``shard``, ``plan_fingerprint`` and ``plan_cells`` of the whole plan, and the shard's expected seconds."""
    import dataclasses

    k, n = shard
    parts, loads = split_loads(plan.cells, n, costs)
    mine = parts[k - 1]
    order = {c.cell_id: i for i, c in enumerate(plan.cells)}
    mine = sorted(mine, key=lambda c: order[c.cell_id])
    info = {"shard": f"{k}/{n}", "plan_fingerprint": plan.fingerprint(), "plan_cells": len(plan.cells),
            "shard_cells": len(mine), "shard_expected_s": round(loads[k - 1], 1)}
    return dataclasses.replace(plan, cells=tuple(mine)), info


def _load(d: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]], Dict[str, Any]]:
    run_json, results = d / "run.json", d / "results.jsonl"
    if not run_json.is_file() or not results.is_file():
        raise ShardError(f"{str(d)!r} has no run.json and results.jsonl (not a directory written by `harness run`)")
    env_path = d / "environment.json"
    current = run_json
    try:  # a torn or hand-edited file: name it, no traceback
        run = json.loads(run_json.read_text())
        current = env_path
        env = json.loads(env_path.read_text()) if env_path.is_file() else {}
        current = results
        records = read_records(results)
    except (OSError, ValueError) as e:
        raise ShardError(f"{str(current)!r} is unreadable ({e}); expected the file `harness run --shard K/N` "
                         f"wrote") from None
    if not isinstance(run, dict) or not isinstance(env, dict):
        raise ShardError(f"{str(d)!r}: run.json/environment.json do not hold JSON objects (not written by `harness run`)")
    if not run.get("shard"):
        raise ShardError(f"{str(d)!r} is not a shard (it was run without --shard K/N)")
    return run, records, env


def merge(out: Path, dirs: Sequence[Path]) -> Dict[str, Any]:
    """Combine shard directories into ``out``: results.jsonl (records in cell-id order), environment.json
    (shard 1's, with ``shards`` describing each part, the longest wall time, summed stage time and counts),
    run.json, hard links to every artifact folder and weights file, and the report.

    Raises :class:`ShardError` when the directories are not all shards 1..N of one plan, when a cell is
    missing or appears twice, or when a shard was interrupted (resume it first)."""
    import shutil

    out = Path(out)
    loaded = [(Path(d),) + _load(Path(d)) for d in dirs]
    fps = {run.get("plan_fingerprint") for _, run, _, _ in loaded}
    if len(fps) != 1:
        raise ShardError(f"the directories are shards of different plans (plan fingerprints {sorted(map(str, fps))})")
    n = {int(run["shard"].split("/")[1]) for _, run, _, _ in loaded}
    ks = sorted(int(run["shard"].split("/")[0]) for _, run, _, _ in loaded)
    if len(n) != 1 or ks != list(range(1, n.pop() + 1)):
        got = ", ".join(run["shard"] for _, run, _, _ in loaded)
        raise ShardError(f"expected shards 1..N of one split exactly once each; got {got}")
    for d, _, _, env in loaded:
        if env.get("interrupted"):
            raise ShardError(f"shard {str(d)!r} was interrupted by {env['interrupted']}; finish it with "
                             f"`python -m harness run --resume {d}` first")
    records: Dict[str, Dict[str, Any]] = {}
    for d, _, recs, _ in loaded:
        for r in recs:
            if r["cell_id"] in records:
                raise ShardError(f"cell {r['cell_id']!r} is in two shards (the second: {str(d)!r})")
            records[r["cell_id"]] = r
    total = loaded[0][1].get("plan_cells")
    if total is not None and len(records) != total:
        raise ShardError(f"the shards hold {len(records)} cells; the plan has {total} (a shard is incomplete: "
                         f"resume it with --resume)")
    if out.exists() and any(out.iterdir()):
        raise ShardError(f"--out {str(out)!r} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "artifacts").mkdir()
    for d, _, _, _ in loaded:
        for f in d.glob("weights*.pth"):
            if not (out / f.name).exists():
                link_or_copy(f, out / f.name)
        art = d / "artifacts"
        if art.is_dir():
            for cell_dir in art.iterdir():
                dst = out / "artifacts" / cell_dir.name
                if cell_dir.is_dir() and not dst.exists():
                    dst.mkdir()
                    for f in cell_dir.iterdir():
                        if f.is_file():
                            link_or_copy(f, dst / f.name)
    merged = [records[k] for k in sorted(records)]
    with open(out / "results.jsonl", "w") as fh:
        for r in merged:
            fh.write(json.dumps(r) + "\n")
    env = dict(loaded[0][3])
    shards = [{"shard": run["shard"], "dir": str(d), "cells": len(recs), "wall_s": e.get("wall_s"),
               "cpu": e.get("cpu"), "counts": e.get("counts")} for d, run, recs, e in sorted(
        loaded, key=lambda t: int(t[1]["shard"].split("/")[0]))]
    walls = [s["wall_s"] for s in shards if s["wall_s"] is not None]
    counts: Dict[str, int] = {}
    for r in merged:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    env.update(shards=shards, shard=None, wall_s=max(walls) if walls else None, counts=counts,
               stage_s=sum(float(e.get("stage_s") or 0) for _, _, _, e in loaded),
               merged_from=len(loaded))
    (out / "environment.json").write_text(json.dumps(env, indent=2, default=str))
    run0 = dict(loaded[0][1])
    run0.update(fingerprint=run0.get("plan_fingerprint"), shard=None, merged=[run["shard"] for _, run, _, _ in loaded])
    (out / "run.json").write_text(json.dumps(run0, indent=2))
    shutil.rmtree(out / ".cache-private", ignore_errors=True)
    write_report(out, merged)
    return {"cells": len(merged), "shards": len(loaded), "counts": counts}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("merge", help="combine the output directories of `run --shard K/N` into one report")
    p.add_argument("out", help="new output directory for the merged run")
    p.add_argument("dirs", nargs="+", help="the shard directories (all N of one split)")


def cmd_merge(args: Any) -> int:
    """Exit 0 (merged, nothing unexpected), 1 (merged, unexpected results), 2 (not mergeable)."""
    import sys


    try:
        res = merge(Path(args.out), [Path(d) for d in args.dirs])
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {res['shards']} shards: {res['cells']} cells ({', '.join(f'{k}: {v}' for k, v in sorted(res['counts'].items()))}); "
          f"report: {Path(args.out) / 'report.html'}")
    return 1 if any(res["counts"].get(s) for s in UNEXPECTED_STATUSES) else 0
