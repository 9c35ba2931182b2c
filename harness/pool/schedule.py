"""The order a run hands export groups to its workers: longest expected first (the critical path), with
expected costs from a built-in table or from the ``cell_s`` recorded by earlier runs on the same cache.

``harness/shard.py`` splits a plan into shards with the same costs (:func:`longest_first`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .coordinator import _export_key

EXPORT_S = {"eager": 0.6, "torchscript": 0.5, "onnx": 0.8, "onnx-dynamo": 32.0, "aoti": 150.0, "executorch": 60.0}
CELL_S = 1.5
CUDA_CELL_S = 0.05


def expected_cost(group: Sequence[Any], costs: Dict[str, float]) -> float:
    """Expected seconds of a group of cells sharing an export: the recorded ``cell_s`` where ``costs`` has
    the cell, else the table (:data:`EXPORT_S` once + :data:`CELL_S` per CPU cell)."""
    total = 0.0
    exported = False
    for c in group:
        if c.cell_id in costs:
            total += costs[c.cell_id]
            exported = True
            continue
        cuda = "cuda" in c.runtime or "tensorrt" in c.runtime
        if not exported and not cuda:
            total += EXPORT_S.get(c.exporter, 10.0)
            exported = True
        total += CUDA_CELL_S if cuda else CELL_S
    return total


COSTS_FILE = "cell_costs.json"  # in the cache root: {cell_id: cell_s} of the cells run with that cache


def read_cache_costs(cache_root: Path) -> Dict[str, float]:
    """The recorded ``cell_s`` per cell id from earlier runs on this cache ({} when none or unreadable)."""
    try:
        data = json.loads((Path(cache_root) / COSTS_FILE).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_cache_costs(cache_root: Path, records: Sequence[Dict[str, Any]]) -> None:
    """Add the ``cell_s`` of ``records`` that ran (not cache hits, not skipped) to the cache's cost file."""
    ran = {r["cell_id"]: float(r["cell_s"]) for r in records
           if r.get("cell_s") and r.get("status") != "skip" and r.get("cache") != "result"}
    if not ran:
        return
    costs = read_cache_costs(cache_root)
    costs.update(ran)
    path = Path(cache_root) / COSTS_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(costs, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # an expected cost is a hint; a read-only cache just keeps the table


def longest_first(groups: Sequence[List[Any]], costs: Optional[Dict[str, float]]) -> List[Tuple[float, List[Any]]]:
    """``(expected seconds, group)`` longest first; ties by export key, so the order is deterministic."""
    costs = costs or {}
    weighted = sorted(((expected_cost(g, costs), str(_export_key(g[0])), g) for g in groups),
                      key=lambda t: (-t[0], t[1]))
    return [(cost, g) for cost, _, g in weighted]


def schedule(groups: Sequence[List[Any]], costs: Optional[Dict[str, float]] = None) -> List[List[Any]]:
    """The order groups are handed to workers: longest expected first (critical path: an AOTInductor compile
    starts at t=0, short groups fill the gaps at the end)."""
    return [g for _, g in longest_first(groups, costs)]
