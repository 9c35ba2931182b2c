"""Row builders of the report: compatibility grids, per-target rows, readiness rows, input-contract rows, the
'All cells' table and its inspector details, results.csv's columns. Plain data (lists of dicts of display
values); the writers turn them into CSV, Markdown and HTML. Model knowledge comes from the record's adapter
(:func:`harness.models.record_owner`), never from a model name."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..decide import config_label, target_order
from ..models import MODELS, record_owner
from ..record import columns
from ..runs import relative_paths as strip_paths
from ..values import PROBES

STATUS_ORDER = ["pass", "xfail", "skip", "fail", "xpass", "error", "crash", "timeout"]
PASSED = ("pass", "xpass")  # statuses whose latency means something (the artifact ran and matched eager)
READINESS_TARGETS = ("tensorrt", "coreml", "opencv_dnn", "tflite", "openvino")
TARGET_AXES = ("crop_method", "replace_method", "refine_mode", "opset", "simplify")
# the 'All cells' table: identity, outcome, accuracy, then what `yolo benchmark` / benchmark_app users expect
# (artifact size, fps, first call, memory, how much was measured, the precision the runtime really ran)
TABLE_COLUMNS = ["cell_id", "status", "reason", "model", "runtime", "exporter", "precision", "exec_precision", "opset",
                 "config", "resolution", "batch", "parity_ref", "judged_max_abs_pha", "violation_frac_pha", "p50_ms",
                 "fps", "cold_ms", "artifact_mib", "peak_rss_mib", "latency_runs", "measure_s"]
# added to TABLE_COLUMNS only where a record of the run has the field (GPU cells: device memory)
OPTIONAL_COLUMNS = ["peak_device_mib"]
# in the table's data (search, filters, CSV-like sorting) but not drawn as columns (the inspector shows them):
# the page must fit 1,400 px without splitting a word
HIDDEN_COLUMNS = ["parity_ref"]
FILTER_COLUMNS = ["model", "status", "runtime", "exporter", "precision", "exec_precision", "opset", "resolution",
                  "batch", "parity_ref"]
# header text of the columns (the keys stay the data-col / CSV names; the header's title names the field);
# words wrap, tokens never split
COLUMN_LABELS = {
    "cell_id": "cell", "exec_precision": "exec prec.", "parity_ref": "parity ref", "resolution": "res.",
    "precision": "prec.", "judged_max_abs_pha": "judged max abs pha", "violation_frac_pha": "beyond atol (frac)",
    "p50_ms": "p50 ms", "p90_ms": "p90 ms", "fps": "fps", "cold_ms": "cold ms", "artifact_mib": "artifact MiB",
    "peak_rss_mib": "peak RSS MiB", "peak_device_mib": "device MiB", "latency_runs": "calls", "measure_s": "meas. s",
}
# derived columns results.csv carries after the record's own fields (what the report computes from a record)
DERIVED_CSV_COLUMNS = ["exec_precision"]

def runtime_info(r: Dict[str, Any]) -> Dict[str, Any]:
    """The record's ``runtime_info`` (a JSON string, or already a dict) as a dict; ``{}`` when absent or not
    a JSON object."""
    info = r.get("runtime_info")
    if isinstance(info, dict):
        return info
    if not isinstance(info, str) or not info.strip():
        return {}
    try:
        out = json.loads(info)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


_PRECISION_NAMES = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bf16": "bf16",
                    "bfloat16": "bf16", "f64": "fp64", "float64": "fp64", "i8": "int8", "u8": "uint8"}


def exec_precision(r: Dict[str, Any]) -> str:
    """The precision the runtime really computed in, where it says so: ``exec_precision`` or
    ``inference_precision`` of the record's ``runtime_info`` (OpenVINO's INFERENCE_PRECISION_HINT after
    compiling: ``bf16`` for an fp32 request on a CPU with AMX/AVX512-BF16), or ``tf32`` for an fp32 CUDA cell
    whose runtime had TF32 matmuls on; names normalised (``f32`` -> ``fp32``). ``""`` where unknown (most
    runtimes do not report it: the cell's ``precision`` is what was asked, not proof of what ran)."""
    info = runtime_info(r)
    v = info.get("exec_precision") or info.get("inference_precision")
    if v:
        v = str(v).strip().lower()
        return _PRECISION_NAMES.get(v, v)
    if r.get("tf32") and r.get("precision") == "fp32" and info.get("tf32_matmul"):
        return "tf32"
    return ""


def _num(v: Any) -> Optional[float]:
    """``v`` as a finite float, else None (None, NaN, inf, text)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def measured_s(r: Dict[str, Any]) -> Optional[float]:
    """Seconds of timed calls behind the record's latency: ``measure_s`` (the measuring loop's wall time), or
    for records written before that field the sum of the stored per-call samples (``latency_samples_ms``,
    the time inside the timed calls); None when not timed."""
    v = _num(r.get("measure_s"))
    if v is not None:
        return v
    s = [x for x in (r.get("latency_samples_ms") or []) if _num(x) is not None]
    return sum(s) / 1e3 if s else None


def peak_rss_mib(r: Dict[str, Any]) -> Optional[float]:
    """Peak resident memory in MiB: the cell's own (``peak_rss_mib``, recorded when a worker died) else the
    worker process's peak so far (``worker_max_rss_mib``: a worker runs many cells, so an upper bound)."""
    return _num(r.get("peak_rss_mib")) if _num(r.get("peak_rss_mib")) is not None else _num(r.get("worker_max_rss_mib"))


def artifact_mib(r: Dict[str, Any]) -> Optional[float]:
    """Size of the shipped artifact file in MiB (``artifact_mib``, else ``onnx_size_mib``)."""
    v = _num(r.get("artifact_mib"))
    return v if v is not None else _num(r.get("onnx_size_mib"))


def _ms(v: Optional[float]) -> str:
    return "" if v is None else (f"{v:.1f}" if v >= 1 else f"{v:.3g}")


def facts(r: Dict[str, Any]) -> List[Tuple[str, str]]:
    """What a deployment engineer compares besides accuracy, as ``(label, value)`` pairs for the values the
    record has (never a label without its value): p50 with its 95 % CI, fps, first call, artifact size,
    peak memory, calls and seconds measured, the precision the runtime really ran. Latency facts only for a
    cell that passed (``pass``/``xpass``): a failing cell's speed is not a speed of a working artifact."""
    out: List[Tuple[str, str]] = []
    ran = r.get("status") in PASSED
    p50 = _num(r.get("p50_ms")) if ran else None
    if p50 is not None:
        ci = r.get("p50_ci_ms")
        ci_txt = (f" ({_ms(_num(ci[0]))}–{_ms(_num(ci[1]))})" if isinstance(ci, (list, tuple)) and len(ci) == 2
                  and _num(ci[0]) is not None and _num(ci[1]) is not None else "")
        out.append(("p50", f"{_ms(p50)} ms{ci_txt}"))
    fps = _num(r.get("fps")) if ran else None
    if fps is not None:
        out.append(("fps", f"{fps:.1f}"))
    cold = _num(r.get("cold_ms")) if ran else None
    if cold is not None:
        out.append(("cold", f"{_ms(cold)} ms"))
    size = artifact_mib(r)
    if size is not None:
        out.append(("artifact", f"{size:.1f} MiB"))
    rss = peak_rss_mib(r)
    if rss is not None:
        out.append(("peak RSS", f"{rss:.0f} MiB"))
    dev = _num(r.get("peak_device_mib"))
    if dev is not None:
        out.append(("device mem", f"{dev:.0f} MiB"))
    runs = _num(r.get("latency_runs")) if ran else None
    secs = measured_s(r) if ran else None
    if runs is not None:
        out.append(("measured", f"{int(runs)} calls" + (f", {secs:.2f} s" if secs is not None else "")))
    elif secs is not None:
        out.append(("measured", f"{secs:.2f} s"))
    ep = exec_precision(r)
    if ep:
        out.append(("exec", ep))
    return out


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


def url_parts(url: Any) -> List[str]:
    """A link's display text in pieces to join with line-break opportunities (``<wbr>``): the URL without
    its scheme, split after each ``/`` (a long URL wraps at its slashes, never inside a name)."""
    text = str(url or "").split("://", 1)[-1]
    return [p for p in re.split(r"(?<=/)", text) if p]


_RANGE = re.compile(r"(?<=\d)([–-])(?=\d)|(?<=\de)(-)(?=\d)")


def nobreak(text: Any) -> str:
    """``text`` with no line break inside a numeric range (``1.01–1.05``) or a number in scientific notation
    (``2.6e-06``): a word joiner, U+2060, on both sides of the dash, so a browser never wraps a number."""
    return _RANGE.sub(lambda m: "\u2060" + m.group(0) + "\u2060", "" if text is None else str(text))


def _shape(r: Dict[str, Any]) -> str:
    """``288x512 b1``: the resolution and batch a latency was measured at (``""`` parts left out)."""
    return " ".join(x for x in (str(r.get("resolution") or ""), f"b{r['batch']}" if r.get("batch") is not None else "")
                    if x)


def target_axes(model: str) -> Tuple[str, ...]:
    """The knobs the per-target table counts for a model: its grid's row axes (the export-relevant knobs of
    :attr:`~harness.models.ModelAdapter.grid_row_axes`), its semantic axis, then opset and onnxsim."""
    a = MODELS.get(model)
    own = (*a.grid_row_axes, *((a.semantic_axis,) if a.semantic_axis else ())) if a is not None else TARGET_AXES[:3]
    out: List[str] = []
    for x in (*own, "opset", "simplify"):
        if x not in out:
            out.append(x)
    return tuple(out)


def target_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per deployment target (model x runtime x exporter x precision) at one resolution and batch: how many
    configurations that ran here pass, which values of each knob of :func:`target_axes` work
    (``unfold 8/8 · roi_align 0/8``: passing / run), and the fastest end-to-end p50 of the passing ones per
    value of the model's semantic axis (``p50_best``, ms: configs that compute different things, other
    models and other image sizes are never pooled). ``skip`` cells are counted apart: they say nothing about
    the target, only about this machine. Keys: ``model``, ``runtime``, ``exporter``, ``precision``,
    ``resolution``, ``batch``, ``shape`` (``288x512 b1``), ``passing``, ``ran``, ``skipped``, one key per
    counted knob, ``p50_best``, ``not_passing`` (``skip_reason`` when nothing ran). Ordered per model like
    the decisions (:func:`harness.decide.target_order`), targets where nothing ran (all skip) last."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        model = r.get("model") or record_owner(r).name
        groups.setdefault((model, r.get("runtime"), r.get("exporter"), r.get("precision"), r.get("resolution"),
                           r.get("batch")), []).append(r)
    def order(kv: Tuple[tuple, List[Dict[str, Any]]]) -> Tuple[Any, ...]:
        (model, rt, ex, prec, res, batch), rs = kv
        nothing_ran = all(r["status"] == "skip" for r in rs)
        t = target_order(str(model), str(rt), str(prec))
        return (t[:2], nothing_ran, t, str(ex), str(res), str(batch))

    rows = []
    for (model, rt, ex, prec, res, batch), rs in sorted(groups.items(), key=order):
        ran = [r for r in rs if r["status"] != "skip"]
        ok = [r for r in ran if r["status"] in PASSED]
        row: Dict[str, Any] = {"model": model, "runtime": rt, "exporter": ex, "precision": prec, "resolution": res,
                               "batch": batch, "shape": _shape(rs[0]), "passing": len(ok), "ran": len(ran),
                               "skipped": len(rs) - len(ran)}
        if not ran:
            row["skip_reason"] = strip_paths(rs[0].get("reason", ""))
        for axis in dict.fromkeys((*target_axes(model), *TARGET_AXES)):
            vals: Dict[str, List[int]] = {}
            for r in ran:
                v = r.get(axis)
                if v in (None, "n/a") or (isinstance(v, float) and np.isnan(v)):
                    continue
                c = vals.setdefault(str(v), [0, 0])
                c[0] += r["status"] in PASSED
                c[1] += 1
            if len(vals) > 0:
                key = (lambda kv: int(kv[0])) if axis == "opset" else (lambda kv: kv[0])
                row[axis] = " · ".join(f"{v} {a}/{b}" for v, (a, b) in sorted(vals.items(), key=key))
        best: Dict[str, float] = {}
        for r in ok:
            if _num(r.get("p50_ms")) is None:  # not timed (NaN: no number either)
                continue
            sem = semantic_label(r) or "all"
            best[sem] = min(best.get(sem, float("inf")), float(r["p50_ms"]))
        if best:
            row["p50_best"] = " · ".join(f"{k} {v:.1f}" for k, v in sorted(best.items()))
        bad: Dict[str, int] = {}
        for r in ran:
            if r["status"] not in PASSED:
                k = r["status"] + (f" at {r['stage']}" if r.get("stage") else "") + (f" ({r['rule']})" if r.get("rule") else "")
                bad[k] = bad.get(k, 0) + 1
        row["not_passing"] = "; ".join(f"{n} {k}" for k, n in sorted(bad.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return rows


def target_tables(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The per-target rows of :func:`target_rows` as one table per model (each model has its own knobs):
    ``[{model, label, axes: [(axis, header)], semantic: header of the semantic axis, rows}]`` in registry
    order, the knob columns only where some row has a value."""
    rows = target_rows(records)
    out = []
    for model in dict.fromkeys([*MODELS, *(r["model"] for r in rows)]):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        a = MODELS.get(model)
        heads = dict(getattr(a, "grid_headers", {}) or {}, opset="opset", simplify="onnxsim")
        axes = [(x, heads.get(x, x.replace("_", " "))) for x in target_axes(model) if any(r.get(x) for r in mine)]
        sem = getattr(a, "semantic_axis", "") if a else ""
        out.append({"model": model, "label": a.display_name if a else model, "axes": axes,
                    "semantic": heads.get(sem, sem.replace("_", " ")) if sem else "", "rows": mine})
    return out


def readiness_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per analysed ONNX artifact (the first record of each model and ``artifact_key``; records
    without one: of each configuration): the model, its network, the export resolution, a label from that
    record's own knobs (:func:`harness.decide.config_label` and the precision), node counts, data-dependent
    ops, TopK K, and per target of :data:`READINESS_TARGETS` ``(target, ready, reasons)`` with the machine's
    paths made relative (:func:`strip_paths`)."""
    seen: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        if r.get("onnx_nodes") is None:
            continue
        a = record_owner(r)
        key = (a.name, r.get("artifact_key") or (config_cell(r), config_label(r), r.get("precision"),
                                                 r.get("export_resolution") or r.get("resolution")))
        if key in seen:
            continue
        net = " ".join(str(r.get(k)) for k in a.grid_group_axes if r.get(k) is not None)
        seen[key] = {
            "model": a.name, "network": net,
            "export_resolution": r.get("export_resolution") or r.get("resolution") or "",
            "config": f"{config_label(r)} · {r.get('precision')}",
            "nodes": r.get("onnx_nodes"), "nodes_before": r.get("before_sim_onnx_nodes"),
            "data_dependent": r.get("data_dependent_ops") or "none", "topk_k": r.get("topk_k") or "—",
            "targets": [(t, r.get(f"ready_{t}"), strip_paths(r.get(f"ready_{t}_why") or "")) for t in READINESS_TARGETS],
        }
    return [seen[k] for k in sorted(seen, key=lambda k: (k[0], seen[k]["network"], seen[k]["config"],
                                                         str(seen[k]["export_resolution"])))]


def csv_columns(records: List[Dict[str, Any]]) -> List[str]:
    """results.csv's columns: every field of the typed record in declaration order (:func:`harness.record.columns`:
    identity, outcome, parity, latency, export, ...), so the header is the same for every run; then the
    report's derived columns (:data:`DERIVED_CSV_COLUMNS`: ``exec_precision``, see :func:`exec_precision`);
    then fields of records written by an older version, sorted. Per-call samples (``latency_samples_ms``)
    stay in the JSONL."""
    declared = [c for c in columns() if c != "latency_samples_ms"]
    derived = [c for c in DERIVED_CSV_COLUMNS if c not in declared]
    known = set(declared) | set(derived) | {"latency_samples_ms"}
    return declared + derived + sorted({k for r in records for k in r if k not in known})


def csv_frame_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records as results.csv rows: each record with the derived columns added (the record itself is
    not changed)."""
    return [{**r, "exec_precision": exec_precision(r)} for r in records]


def config_cell(r: Dict[str, Any]) -> str:
    """The 'config' column: the network and the model's knobs (exporter and opset have their own columns)."""
    a = record_owner(r)
    net = [str(r.get(k)) for k in a.grid_group_axes if r.get(k) is not None]
    rest = config_label(r).split(" · ", 1)
    knobs = rest[1] if len(rest) > 1 else ""
    sim = "onnxsim" if r.get("simplify") else ""
    return " · ".join(x for x in [*net, knobs, sim] if x)


def table_columns(records: List[Dict[str, Any]]) -> List[str]:
    """The 'All cells' columns of this run: :data:`TABLE_COLUMNS`, plus each of :data:`OPTIONAL_COLUMNS`
    that some record has (device memory on GPU runs)."""
    extra = [c for c in OPTIONAL_COLUMNS if any(_num(r.get(c)) is not None for r in records)]
    if not extra:
        return list(TABLE_COLUMNS)
    at = TABLE_COLUMNS.index("peak_rss_mib") + 1
    return TABLE_COLUMNS[:at] + extra + TABLE_COLUMNS[at:]


def _fixed(v: Optional[float], digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def table_rows(records: List[Dict[str, Any]], cols: Optional[List[str]] = None) -> List[Dict[str, str]]:
    """The 'All cells' rows: display strings for ``cols`` (default :func:`table_columns`): reason whole (it
    wraps) with the machine's paths made relative (:func:`strip_paths`); a record without a ``model``
    field shows the model that owns it; latency columns (p50, fps, cold, calls, seconds) only for cells that
    passed, like :func:`facts`."""
    cols = cols or table_columns(records)
    out = []
    for r in records:
        row = {c: fmt(r.get(c)) for c in cols}
        row["reason"] = strip_paths(r.get("reason") or "")
        row["config"] = config_cell(r)
        if row.get("model", "") == "":
            row["model"] = record_owner(r).name
        ran = r.get("status") in PASSED
        row["exec_precision"] = exec_precision(r)
        row["artifact_mib"] = _fixed(artifact_mib(r), 1)
        row["peak_rss_mib"] = _fixed(peak_rss_mib(r), 0)
        if "peak_device_mib" in cols:
            row["peak_device_mib"] = _fixed(_num(r.get("peak_device_mib")), 0)
        row["measure_s"] = _fixed(measured_s(r), 2) if ran else ""
        row["fps"] = _fixed(_num(r.get("fps")), 1) if ran else ""
        row["cold_ms"] = _fixed(_num(r.get("cold_ms")), 1) if ran else ""
        for c in ("p50_ms", "p90_ms", "latency_runs", "cv"):
            if c in row and not ran:
                row[c] = ""
        out.append(row)
    return out


def _runtime_info_text(r: Dict[str, Any]) -> str:
    """The record's runtime_info as ``key value; ...`` (nested values as compact JSON), paths made relative."""
    info = runtime_info(r)
    parts = []
    for k, v in info.items():
        if v in (None, "", [], {}):
            continue
        parts.append(f"{k} {v if isinstance(v, (str, int, float)) else json.dumps(v, separators=(',', ':'))}")
    return strip_paths("; ".join(parts))


def cell_details(records: List[Dict[str, Any]], env: Dict[str, Any], out_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Per cell id: ``{stage, lines, links}`` for the report's inspector (what the table does not show:
    parity numbers, latency spread, the numbers of :func:`facts`, rule and its evidence, graph facts; links
    to the artifact folder, its logs and the rule's evidence). Every line names only values the record has:
    a missing value drops its label too (never ``compute p50  ms``); paths are relative (:func:`strip_paths`)."""
    rules = env.get("rules") or {}
    out: Dict[str, Any] = {}
    for r in records:
        lines = []
        if r.get("parity_note"):
            lines.append(f"parity: {strip_paths(r['parity_note'])}")
        elif r.get("parity"):
            lines.append(f"parity: {strip_paths(r['parity'])}")
        errs = [(label, fmt(_num(r.get(k)))) for label, k in (
            ("max abs pha over every pixel", "max_abs_pha"), ("judged", "judged_max_abs_pha"),
            ("fgr judged", "judged_max_abs_fgr" if _num(r.get("judged_max_abs_fgr")) is not None else "max_abs_fgr"))]
        errs = [f"{label} {v}" for label, v in errs if v]
        if errs:
            lines.append("; ".join(errs))
        fact_lines = [f"{label}: {value}" for label, value in facts(r)]
        if r.get("status") in PASSED and _num(r.get("p50_ms")) is not None:
            stop = {"ci": "stopped when the p50's CI was tight enough", "max": "stopped at the time cap",
                    "min": "stopped at the protocol's minimums"}.get(r.get("latency_stop") or "", "")
            spread = [f"{k} {fmt(_num(r.get(f'{k}_ms')))} ms" for k in ("p90", "p99") if _num(r.get(f"{k}_ms")) is not None]
            if _num(r.get("cv")) is not None:
                spread.append(f"cv {fmt(_num(r.get('cv')))}")
            if stop:
                spread.append(stop)
            if _num(r.get("compute_p50_ms")) is not None:
                spread.append(f"compute p50 {fmt(_num(r.get('compute_p50_ms')))} ms")
            if spread:
                fact_lines.insert(1, "spread: " + ", ".join(spread))
        lines += fact_lines
        if r.get("latency_warning") and r.get("status") in PASSED:
            lines.append(f"latency: {r['latency_warning']}")
        io = [f"{k} {fmt(_num(r.get(f'{k}_s')))} s" for k in ("export", "load") if _num(r.get(f"{k}_s")) is not None]
        if io:
            lines.append(", ".join(io))
        info = _runtime_info_text(r)
        if info:
            lines.append(f"runtime info: {info}")
        for k, label in (("first_divergence", "first divergence"), ("data_dependent_ops", "data-dependent ops"),
                         ("input_contract", "input contract"), ("drift", "drift"), ("tiny_state", "[1,1,1,1] state")):
            if r.get(k):
                lines.append(f"{label}: {strip_paths(r[k])}")
        not_ready = [f"{t} ({strip_paths(r.get(f'ready_{t}_why'))})" if r.get(f"ready_{t}_why") else t
                     for t in READINESS_TARGETS if r.get(f"ready_{t}") is False]
        if not_ready:
            lines.append("not ready for: " + "; ".join(not_ready))
        links = []
        rule = r.get("rule")
        if rule:
            ev = (rules.get(rule) or {}).get("evidence")
            lines.append(f"rule {rule}" + (f": {(rules.get(rule) or {}).get('reason')}" if (rules.get(rule) or {}).get("reason") else ""))
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
