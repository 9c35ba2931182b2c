"""Findings: data-driven observations for the summary beyond the decision table (harness/decide.py) and
the failures-by-cause table. Generic ones (the input-contract probes) live here; each model adds its own
through :meth:`harness.models.ModelAdapter.report_findings`."""

from __future__ import annotations

import itertools
import math
from typing import Any, Dict, List, Optional

import numpy as np

from ..models import MODELS
from .tables import probe_names

PROBE_WORDS = {
    ("size", "garbage"): "return wrong alpha for H, W not multiples of 4 without an error",
    ("size", "pads"): "accept H, W not multiples of 4 and answer as if zero-padded",
    ("dtype", "garbage"): "return wrong outputs for a wrong input dtype without an error",
    ("dtype", "converts"): "convert a wrong input dtype silently (harmless)",
    ("channels", "garbage"): "run a 4-channel (RGBA) input without an error",
    ("range", "garbage"): "run 0-255 inputs without an error and return a different matte",
}
_EXPLAIN_KEYS = ("exporter", "replace_method", "crop_method", "refine_mode", "runtime", "precision", "simplify",
                 "input_guard", "opset")


def findings(records: List[Dict[str, Any]]) -> List[str]:
    """Every finding of a run, one line each: each registered model's own
    (:meth:`~harness.models.ModelAdapter.report_findings`, in registry order), then the input-contract ones."""
    own = [line for a in MODELS.values() for line in a.report_findings(records)]
    return own + contract_findings(records)


def _timed(r: Dict[str, Any]) -> bool:
    """The record has a positive, finite p50 (None, 0 and NaN: no latency to compare)."""
    v = r.get("p50_ms")
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _explain(bad: List[Dict[str, Any]], probed: List[Dict[str, Any]]) -> Optional[str]:
    """The fewest (at most three) ``key=value|value`` conditions that select exactly ``bad`` among
    ``probed`` (e.g. "replace_method=n/a|scatter_element, input_guard=False"), or None."""
    ids = {r["cell_id"] for r in bad}
    if ids == {r["cell_id"] for r in probed}:
        return "every probed configuration"
    conds = []
    for k in _EXPLAIN_KEYS:
        vals = {str(r.get(k)) for r in bad}
        if len(vals) < len({str(r.get(k)) for r in probed}):  # the condition excludes something
            conds.append((k, vals))
    for n in (1, 2, 3):
        for combo in itertools.combinations(conds, n):
            sel = {r["cell_id"] for r in probed if all(str(r.get(k)) in v for k, v in combo)}
            if sel == ids:
                return ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in combo)
    return None


def _explain_by_exporter(bad: List[Dict[str, Any]], probed: List[Dict[str, Any]]) -> str:
    """``_explain`` within each exporter (``exporter: conditions (n cells)``), joined by "; "."""
    parts = []
    for ex in sorted({str(r.get("exporter")) for r in bad}):
        b = [r for r in bad if str(r.get("exporter")) == ex]
        p = [r for r in probed if str(r.get("exporter")) == ex]
        why = _explain(b, p)
        if why is None:
            rts: Dict[str, int] = {}
            for r in b:
                rts[str(r.get("runtime"))] = rts.get(str(r.get("runtime")), 0) + 1
            why = "some configurations on " + ", ".join(f"{k} ({n})" for k, n in sorted(rts.items()))
        parts.append(f"{ex}: {why} ({len(b)} of {len(p)})")
    return "; ".join(parts)


def contract_findings(records: List[Dict[str, Any]]) -> List[str]:
    """Findings of the input-contract probes (harness/probes.py): per probe, which graphs fail silently
    (``garbage``), crash or time out, explained by the fewest cell fields that select exactly them; then
    what the ``input_guard`` export option changes against the same cells without it (and its p50 cost,
    median over twin cells)."""
    out: List[str] = []
    probed_any = [r for r in records if r.get("input_contract")]
    if not probed_any:
        return out
    probes = probe_names()
    for p in probes:
        probed = [r for r in probed_any if r.get(f"probe_{p}") not in (None, "not run")]
        for outcome in ("garbage", "crash", "timeout", "pads", "converts"):
            bad = [r for r in probed if r.get(f"probe_{p}") == outcome]
            if not bad:
                continue
            words = PROBE_WORDS.get((p, outcome), f"{outcome} on the {p} probe")
            line = (f"Input contract, {p}: {len(bad)} of {len(probed)} probed cells {words} — "
                    f"{_explain_by_exporter(bad, probed)}")
            example = (bad[0].get("probe_details") or {}).get(p)
            out.append(line + (f"; e.g. {example}" if example else ""))
    by_id = {r["cell_id"]: r for r in probed_any}
    changed: Dict[str, int] = {}
    guarded, cost = 0, []
    for r in probed_any:
        if not r.get("input_guard"):
            continue
        twin = by_id.get(r["cell_id"][: -len("-guard")])
        if twin is None:
            continue
        guarded += 1
        for p in probes:
            a, b = twin.get(f"probe_{p}"), r.get(f"probe_{p}")
            if a != b:
                changed[f"{p} {a} → {b}"] = changed.get(f"{p} {a} → {b}", 0) + 1
        if _timed(r) and _timed(twin):
            cost.append(r["p50_ms"] / twin["p50_ms"] - 1)
    if guarded:
        what = ", ".join(f"{k} ({n})" for k, n in sorted(changed.items())) or "nothing"
        p50 = f"; p50 {100 * float(np.median(cost)):+.1f} % (median)" if cost else ""
        out.append(f"input_guard export option on {guarded} cells vs the same cells without it: {what}{p50}")
    return out
