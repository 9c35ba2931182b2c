"""Row builders of the report: compatibility grids, per-target rows, readiness rows, input-contract rows, the
'All cells' table and its inspector details, results.csv's columns. Plain data (lists of dicts of display
values); the writers turn them into CSV, Markdown and HTML. Model knowledge comes from the record's adapter
(:func:`harness.models.record_owner`), never from a model name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..decide import config_label
from ..models import record_owner
from ..record import columns
from ..values import PROBES

STATUS_ORDER = ["pass", "xfail", "skip", "fail", "xpass", "error", "crash", "timeout"]
READINESS_TARGETS = ("tensorrt", "coreml", "opencv_dnn", "tflite", "openvino")
TARGET_AXES = ("crop_method", "replace_method", "refine_mode", "opset", "simplify")
TABLE_COLUMNS = ["cell_id", "status", "reason", "model", "runtime", "exporter", "precision", "opset", "config",
                 "resolution", "batch", "parity_ref", "judged_max_abs_pha", "violation_frac_pha", "p50_ms", "p90_ms", "cv"]
FILTER_COLUMNS = ["model", "status", "runtime", "exporter", "precision", "opset", "resolution", "batch", "parity_ref"]


def fmt(v: Any) -> str:
    """A value for display: ``""`` for None and NaN, floats in 4 significant digits (scientific below 1e-3 and
    from 1000 on), anything else as ``str``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


def target_label(r: Dict[str, Any]) -> str:
    """What produced a record's artifact, e.g. ``onnx+onnxsim+guard+static`` (exporter and export options:
    the model adapter's :meth:`~harness.models.ModelAdapter.export_tags`; ``+onnxsim`` unless onnxsim is a grid
    row of the model)."""
    a = record_owner(r)
    sim = "+onnxsim" if r.get("simplify") and "simplify" not in a.grid_row_axes else ""
    return r.get("exporter", "") + sim + a.export_tags(r)


def semantic_label(r: Dict[str, Any]) -> str:
    """``mode full`` / ``ratio 0.5``: the model's semantic axis and its value (the grid's header name)."""
    a = record_owner(r)
    ax = getattr(a, "semantic_axis", "")
    head = (getattr(a, "grid_headers", {}) or {}).get(ax, ax.replace("_", " "))
    return f"{head} {r.get(ax)}" if ax and r.get(ax) is not None else ""


def grid(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Compatibility grids: one per (model, its ``grid_group_axes`` (e.g. the network), exporter+options,
    runtime, resolution, batch); rows are the model's ``grid_row_axes``, columns opset x precision. Each grid:
    ``{title, row_headers, cols: [(opset label, precision)], rows: [{row: values, cells: [record or None]}]}``."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        a = record_owner(r)
        runtime = str(r.get("runtime")) + (" (TF32)" if r.get("tf32") else "")
        key = (a.name, tuple(r.get(x) for x in a.grid_group_axes), target_label(r), runtime, r.get("resolution"),
               r.get("batch"))
        groups.setdefault(key, []).append(r)
    grids = []
    for (model, lead, target, rt, res, batch), recs in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
        a = record_owner(recs[0])
        cols = sorted({(r.get("opset") or 0, r.get("precision")) for r in recs})
        row_of = lambda r: tuple(r.get(x) for x in a.grid_row_axes)  # noqa: E731
        rows = sorted({row_of(r) for r in recs}, key=lambda row: [str(x) for x in row])
        cells = {(row_of(r), (r.get("opset") or 0, r.get("precision"))): r for r in recs}
        table = [{"row": row, "cells": [cells.get((row, col)) for col in cols]} for row in rows]
        grids.append({
            "title": " · ".join([*map(str, lead or (model,)), f"{target} → {rt}", str(res), f"batch {batch}"]),
            "row_headers": [a.grid_headers.get(x, x) for x in a.grid_row_axes],
            "cols": [(f"opset {o}" if o else "—", p) for o, p in cols],
            "rows": table,
        })
    return grids


def probe_names() -> Tuple[str, ...]:
    """The input-contract probes' names (:data:`harness.values.PROBES`: size, dtype, channels, range)."""
    return PROBES


def contract_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per target (exporter and export options, see :func:`target_label`, x runtime) of the probed records:
    ``{target, runtime, cells, <probe>: "outcome count · ..."}`` for each probe of :func:`probe_names`."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        if r.get("input_contract"):
            groups.setdefault((target_label(r), r.get("runtime")), []).append(r)
    if not groups:
        return []
    rows = []
    for (target, rt), rs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        row: Dict[str, Any] = {"target": target, "runtime": rt, "cells": len(rs)}
        for p in probe_names():
            n: Dict[str, int] = {}
            for r in rs:
                n[str(r.get(f"probe_{p}"))] = n.get(str(r.get(f"probe_{p}")), 0) + 1
            row[p] = " · ".join(f"{k} {v}" for k, v in sorted(n.items()))
        rows.append(row)
    return rows


def target_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per deployment target (runtime x exporter x precision): how many configurations that ran here
    pass, which values of each knob of :data:`TARGET_AXES` work (``unfold 8/8 · roi_align 0/8``: passing /
    run), and the fastest end-to-end p50 of the passing ones per value of the model's semantic axis
    (``p50_best``, ms: configs that compute different things are never pooled). ``skip`` cells are counted
    apart: they say nothing about the target, only about this machine."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r.get("runtime"), r.get("exporter"), r.get("precision")), []).append(r)
    rows = []
    for (rt, ex, prec), rs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        ran = [r for r in rs if r["status"] != "skip"]
        ok = [r for r in ran if r["status"] in ("pass", "xpass")]
        row: Dict[str, Any] = {"runtime": rt, "exporter": ex, "precision": prec, "passing": len(ok), "ran": len(ran),
                               "skipped": len(rs) - len(ran)}
        if not ran:
            row["skip_reason"] = str(rs[0].get("reason", ""))[:160]
        for axis in TARGET_AXES:
            vals: Dict[str, List[int]] = {}
            for r in ran:
                v = r.get(axis)
                if v in (None, "n/a") or (isinstance(v, float) and np.isnan(v)):
                    continue
                c = vals.setdefault(str(v), [0, 0])
                c[0] += r["status"] in ("pass", "xpass")
                c[1] += 1
            if len(vals) > 0:
                key = (lambda kv: int(kv[0])) if axis == "opset" else (lambda kv: kv[0])
                row[axis] = " · ".join(f"{v} {a}/{b}" for v, (a, b) in sorted(vals.items(), key=key))
        best: Dict[str, float] = {}
        for r in ok:
            if r.get("p50_ms") is None or not math.isfinite(r["p50_ms"]):  # not timed (NaN: no number either)
                continue
            sem = semantic_label(r) or "all"
            best[sem] = min(best.get(sem, float("inf")), float(r["p50_ms"]))
        if best:
            row["p50_best"] = " · ".join(f"{k} {v:.1f}" for k, v in sorted(best.items()))
        bad: Dict[str, int] = {}
        for r in ran:
            if r["status"] not in ("pass", "xpass"):
                k = r["status"] + (f" at {r['stage']}" if r.get("stage") else "") + (f" ({r['rule']})" if r.get("rule") else "")
                bad[k] = bad.get(k, 0) + 1
        row["not_passing"] = "; ".join(f"{n} {k}" for k, n in sorted(bad.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return rows


def readiness_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per analysed ONNX artifact (first record of each network/exporter/mode/crop/replace/opset/
    precision/onnxsim): node counts, data-dependent ops, TopK K, and per target of :data:`READINESS_TARGETS`
    ``(target, ready, reasons)``."""
    seen: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        if r.get("onnx_nodes") is None:
            continue
        key = (r.get("backbone"), r.get("exporter"), r.get("refine_mode"), r.get("crop_method"),
               r.get("replace_method"), r.get("opset"), r.get("precision"), bool(r.get("simplify")))
        if key in seen:
            continue
        seen[key] = {
            "config": f"{r.get('backbone')} {r.get('refine_mode')} {r.get('crop_method')}/{r.get('replace_method')} "
                      f"op{r.get('opset')} {r.get('precision')}{' +onnxsim' if r.get('simplify') else ''}",
            "nodes": r.get("onnx_nodes"), "nodes_before": r.get("before_sim_onnx_nodes"),
            "data_dependent": r.get("data_dependent_ops") or "none", "topk_k": r.get("topk_k") or "—",
            "targets": [(t, r.get(f"ready_{t}"), r.get(f"ready_{t}_why") or "") for t in READINESS_TARGETS],
        }
    return [seen[k] for k in sorted(seen, key=lambda k: [str(x) for x in k])]


def csv_columns(records: List[Dict[str, Any]]) -> List[str]:
    """results.csv's columns: every field of the typed record in declaration order (:func:`harness.record.columns`:
    identity, outcome, parity, latency, export, ...), so the header is the same for every run; then fields of
    records written by an older version, sorted. Per-call samples (``latency_samples_ms``) stay in the JSONL."""
    declared = [c for c in columns() if c != "latency_samples_ms"]
    known = set(declared) | {"latency_samples_ms"}
    return declared + sorted({k for r in records for k in r if k not in known})


def config_cell(r: Dict[str, Any]) -> str:
    """The 'config' column: the network and the model's knobs (exporter and opset have their own columns)."""
    a = record_owner(r)
    net = [str(r.get(k)) for k in a.grid_group_axes if r.get(k) is not None]
    rest = config_label(r).split(" · ", 1)
    knobs = rest[1] if len(rest) > 1 else ""
    sim = "onnxsim" if r.get("simplify") else ""
    return " · ".join(x for x in [*net, knobs, sim] if x)


def table_rows(records: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """The 'All cells' rows: display strings for :data:`TABLE_COLUMNS` (reason whole: it wraps; a record
    without a ``model`` field shows the model that owns it)."""
    out = []
    for r in records:
        row = {c: fmt(r.get(c)) for c in TABLE_COLUMNS}
        row["reason"] = str(r.get("reason") or "")
        row["config"] = config_cell(r)
        if row["model"] == "":
            row["model"] = record_owner(r).name
        out.append(row)
    return out


def cell_details(records: List[Dict[str, Any]], env: Dict[str, Any], out_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Per cell id: ``{stage, lines, links}`` for the report's inspector (what the table does not show:
    parity numbers, latency spread, rule and its evidence, graph facts; links to the artifact folder, its
    logs and the rule's evidence)."""
    rules = env.get("rules") or {}
    out: Dict[str, Any] = {}
    for r in records:
        lines = []
        if r.get("parity_note"):
            lines.append(f"parity: {r['parity_note']}")
        elif r.get("parity"):
            lines.append(f"parity: {r['parity']}")
        if r.get("max_abs_pha") is not None:
            lines.append(f"max abs pha over every pixel {fmt(r['max_abs_pha'])}; judged {fmt(r.get('judged_max_abs_pha'))}"
                         f"; fgr judged {fmt(r.get('judged_max_abs_fgr', r.get('max_abs_fgr')))}")
        if r.get("p50_ms") is not None:
            ci = r.get("p50_ci_ms")
            ci_txt = f" (95 % CI {fmt(ci[0])}–{fmt(ci[1])})" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
            stop = {"ci": "stopped when the p50's CI was tight enough", "max": "stopped at the time cap",
                    "min": "stopped at the protocol's minimums"}.get(r.get("latency_stop") or "", "")
            lines.append(f"latency p50 {fmt(r['p50_ms'])}{ci_txt} / p90 {fmt(r.get('p90_ms'))} / p99 {fmt(r.get('p99_ms'))} ms, "
                         f"cv {fmt(r.get('cv'))}, {r.get('latency_runs')} calls{'; ' + stop if stop else ''}; "
                         f"compute p50 {fmt(r.get('compute_p50_ms'))} ms")
        if r.get("latency_warning"):
            lines.append(f"latency: {r['latency_warning']}")
        if r.get("export_s") is not None or r.get("load_s") is not None:
            lines.append(f"export {fmt(r.get('export_s'))} s, load {fmt(r.get('load_s'))} s")
        for k, label in (("first_divergence", "first divergence"), ("data_dependent_ops", "data-dependent ops"),
                         ("input_contract", "input contract"), ("drift", "drift"), ("tiny_state", "[1,1,1,1] state")):
            if r.get(k):
                lines.append(f"{label}: {r[k]}")
        not_ready = [f"{t} ({r.get(f'ready_{t}_why')})" for t in READINESS_TARGETS if r.get(f"ready_{t}") is False]
        if not_ready:
            lines.append("not ready for: " + "; ".join(not_ready))
        links = []
        rule = r.get("rule")
        if rule:
            ev = (rules.get(rule) or {}).get("evidence")
            lines.append(f"rule {rule}" + (f": {(rules.get(rule) or {}).get('reason')}" if rules.get(rule) else ""))
            if ev:
                links.append([f"evidence for {rule}", ev])
        cid = str(r.get("cell_id"))
        folder = Path("artifacts") / cid
        if out_dir is not None and (Path(out_dir) / folder).is_dir():
            links.append(["artifact folder", folder.as_posix() + "/"])
            for f in sorted((Path(out_dir) / folder).glob("*.log")):
                links.append([f"log: {f.name}", (folder / f.name).as_posix()])
        out[cid] = {"stage": r.get("stage") or "", "lines": lines, "links": links}
    return out
