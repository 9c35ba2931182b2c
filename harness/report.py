"""Report writers: ``results.csv`` (pandas), ``report.html`` (jinja2, self-contained), ``summary.md``
and ``environment.json``. :func:`write_report` can rebuild everything from ``results.jsonl`` alone."""

from __future__ import annotations

import datetime as _dt
import json

import numpy as np
import math
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .benchmark import cpu_flags, cpu_name
from .cache import package_versions

STATUS_ORDER = ["pass", "xfail", "skip", "fail", "xpass", "error", "crash", "timeout"]


def read_records(results: Path) -> List[Dict[str, Any]]:
    """Parse ``results.jsonl``; a torn last line (process killed mid-write) is ignored.

    Raises:
        FileNotFoundError: no results.jsonl at ``results``.
        ValueError: a line other than the last is not valid JSON (names the line number).
    """
    lines = results.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise ValueError(f"{results}: line {n} is not valid JSON") from None
    return out


def _git_commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip() or None
    except Exception:  # noqa: BLE001 - not a git checkout
        return None


def _system() -> Dict[str, Any]:
    from .system import describe

    return describe()


def environment(extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Versions and hardware for ``environment.json``."""
    import os
    import sys

    versions = package_versions()
    torch = sys.modules.get("torch")  # only when this process already uses it (a warm run need not)
    env: Dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{k: versions.get(k) for k in ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "onnxscript")},
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "packages": package_versions(),
        "cpu_count": os.cpu_count(),
        "system": _system(),
        "cuda": (torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None),
        "git_commit": _git_commit(),
    }
    if extra:
        env.update(extra)
    return env


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)


def _adapter(r: Dict[str, Any]) -> Any:
    from .models import record_owner

    return record_owner(r)


def _target(r: Dict[str, Any]) -> str:
    """What produced a record's artifact, e.g. ``onnx+onnxsim+guard+static`` (exporter and export options:
    the model adapter's :meth:`~harness.models.ModelAdapter.export_tags`)."""
    a = _adapter(r)
    sim = "+onnxsim" if r.get("simplify") and "simplify" not in a.grid_row_axes else ""  # a row of its own (RVM)
    return r.get("exporter", "") + sim + a.export_tags(r)


def _grid(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Compatibility grids: one per (model, its ``grid_group_axes`` (BGMv2: backbone), exporter+options,
    runtime, resolution, batch); rows are the model's ``grid_row_axes`` (BGMv2: crop x replace x mode),
    columns opset x precision."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        a = _adapter(r)
        runtime = str(r.get("runtime")) + (" (TF32)" if r.get("tf32") else "")
        key = (a.name, tuple(r.get(x) for x in a.grid_group_axes), _target(r), runtime, r.get("resolution"),
               r.get("batch"))
        groups.setdefault(key, []).append(r)
    grids = []
    for (model, lead, target, rt, res, batch), recs in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
        a = _adapter(recs[0])
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


def _findings(records: List[Dict[str, Any]]) -> List[str]:
    """Data-driven observations for the summary beyond the decision table (harness/decide.py) and the
    failures-by-cause table: RVM's recurrent findings."""
    return rvm_findings(records)


def rvm_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per RVM cell that ran its frames: the config, verdict, per-frame error curve (max abs over the
    six outputs), drift, the ``[1,1,1,1]`` state check and the TensorRT-style readiness of its graph."""
    rows = []
    for r in records:
        if r.get("model") != "rvm" or not r.get("frame_err_max"):
            continue
        curve = r["frame_err_max"]
        rows.append({"cell_id": r["cell_id"], "status": r["status"], "exporter": r.get("exporter"),
                     "runtime": r.get("runtime"), "precision": r.get("precision"), "opset": r.get("opset"),
                     "ratio": r.get("downsample_ratio"), "ratio_mode": r.get("ratio_mode") if str(r.get("exporter", "")).startswith("onnx") else "",
                     "dims": r.get("dim_names") if str(r.get("exporter", "")).startswith("onnx") else "",
                     "simplify": r.get("simplify"), "first": curve[0], "last": curve[-1], "worst": max(curve),
                     "drift": r.get("drift", ""), "tiny_state": r.get("tiny_state", ""),
                     "trt": r.get("ready_tensorrt"), "trt_why": r.get("ready_tensorrt_why", ""),
                     "collisions": r.get("dim_collisions", ""), "trtexec": r.get("trtexec", "")})
    return sorted(rows, key=lambda x: x["cell_id"])


def rvm_findings(records: List[Dict[str, Any]]) -> List[str]:
    """The RVM question in one line per answer: which ONNX exports match eager over the recurrent frames *and*
    pass the TensorRT-style static checks (no Resize scales from a graph input, no dim name standing for two
    sizes), and why the others do not."""
    onnx = [r for r in records if r.get("model") == "rvm" and str(r.get("exporter", "")).startswith("onnx")]
    if not onnx:
        return []

    def cfg(r: Dict[str, Any]) -> str:
        return (f"{r['exporter']}{'+onnxsim' if r.get('simplify') else ''} op{r.get('opset')} {r.get('precision')} "
                f"ratio {r.get('ratio_mode')} ({r.get('downsample_ratio')}) dims {r.get('dim_names')}")

    good = sorted({cfg(r) for r in onnx if r["status"] in ("pass", "xpass") and r.get("ready_tensorrt")})
    out = []
    if good:
        out.append(f"RVM on TensorRT-style constraints: {len(good)} ONNX configs match eager over 10 frames and pass "
                   f"the static checks, e.g. {'; '.join(good[:3])}")
    else:
        out.append("RVM on TensorRT-style constraints: no ONNX config both matches eager and passes the static checks")
    why: Dict[str, int] = {}
    for r in onnx:
        if r["status"] in ("pass", "xpass") and r.get("ready_tensorrt") is False:
            text = str(r.get("ready_tensorrt_why", ""))
            keys = [k for k, found in (
                ("a runtime downsample_ratio input feeds Resize scales (a float shape tensor)", "Resize scales" in text),
                ("one dim name stands for different sizes (shared names)", "stands for different sizes" in text)) if found]
            for key in keys or [text.split(" (")[0][:120]]:
                why[key] = why.get(key, 0) + 1
    for k, n in sorted(why.items(), key=lambda kv: -kv[1]):
        out.append(f"RVM: {n} passing ONNX cells are not TensorRT-ready: {k}")
    return out


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


def _explain(bad: List[Dict[str, Any]], probed: List[Dict[str, Any]]) -> Optional[str]:
    """The fewest (at most three) ``key=value|value`` conditions that select exactly ``bad`` among
    ``probed`` (e.g. "replace_method=n/a|scatter_element, input_guard=False"), or None."""
    import itertools

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
    what the ``input_guard`` export option changes against the same cells without it."""
    from .probes import PROBES

    out = []
    probed_any = [r for r in records if r.get("input_contract")]
    if not probed_any:
        return out
    for p in PROBES:
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
        for p in PROBES:
            a, b = twin.get(f"probe_{p}"), r.get(f"probe_{p}")
            if a != b:
                changed[f"{p} {a} → {b}"] = changed.get(f"{p} {a} → {b}", 0) + 1
        if r.get("p50_ms") and twin.get("p50_ms"):
            cost.append(r["p50_ms"] / twin["p50_ms"] - 1)
    if guarded:
        what = ", ".join(f"{k} ({n})" for k, n in sorted(changed.items())) or "nothing"
        p50 = f"; p50 {100 * float(np.median(cost)):+.1f} % (median)" if cost else ""
        out.append(f"input_guard export option on {guarded} cells vs the same cells without it: {what}{p50}")
    return out


def static_findings(records: List[Dict[str, Any]]) -> List[str]:
    """Findings of the static patch selector (``refine_patch_select``, issue 14): sampling/thresholding
    coverage per exporter (passing cells, nonzero vs static), ONNX graphs ready for TensorRT, what still
    blocks CoreML, and the p50 of each static cell against its official (nonzero) twin per runtime."""
    patch = [r for r in records if r.get("refine_mode") in ("sampling", "thresholding")]
    static = [r for r in patch if r.get("refine_patch_select") == "static"]
    if not static:
        return []
    out = []
    cover = []
    for ex in sorted({str(r.get("exporter")) for r in static}):
        def n(sel):
            rs = [r for r in patch if str(r.get("exporter")) == ex and (r.get("refine_patch_select") or "nonzero") == sel
                  and r["status"] != "skip"]
            return sum(r["status"] in ("pass", "xpass") for r in rs), len(rs)

        a, b = n("nonzero"), n("static")
        cover.append(f"{ex} {a[0]}/{a[1]} → {b[0]}/{b[1]}")
    out.append("Static patch selection, sampling/thresholding cells passing (nonzero → static, of those run here): "
               + "; ".join(cover))
    for sel in ("nonzero", "static"):
        graphs = {r.get("artifact_key"): r for r in patch if (r.get("refine_patch_select") or "nonzero") == sel
                  and isinstance(r.get("ready_tensorrt"), bool)}.values()  # one per exported graph
        if graphs:
            ready = {t: sum(bool(r.get(f"ready_{t}")) for r in graphs) for t in ("tensorrt", "openvino", "coreml", "tflite")}
            out.append(f"refine_patch_select={sel}: of {len(graphs)} sampling/thresholding ONNX graphs, "
                       + ", ".join(f"{n} {t}-ready" for t, n in ready.items())
                       + (" (TensorRT: no NonZero, every TopK K constant <= 3840)" if sel == "static" else ""))
        exported = [r for r in patch if (r.get("refine_patch_select") or "nonzero") == sel
                    and r.get("exporter") in ("onnx-dynamo", "aoti") and r["status"] != "skip"]
        if exported:
            ok = sum(r.get("stage") != "export" for r in exported)
            out.append(f"refine_patch_select={sel}: torch.export (dynamo ONNX, AOTInductor) gets through on "
                       f"{ok} of {len(exported)} sampling/thresholding cells")
    import re

    for target in ("coreml", "tflite"):
        blockers: Dict[str, int] = {}
        for r in {r.get("artifact_key"): r for r in static}.values():
            why = r.get(f"ready_{target}_why")
            if isinstance(why, str) and why:
                names = set(re.findall(r"\b([A-Z][A-Za-z]+)x\d+", why)) | ({"dynamic dims"} if "dynamic dims" in why else set())
                for name in names:
                    blockers[name] = blockers.get(name, 0) + 1
        if blockers:
            out.append(f"Still blocking {target} in static graphs (op: graphs): "
                       + ", ".join(f"{k} {v}" for k, v in sorted(blockers.items(), key=lambda kv: (-kv[1], kv[0]))))
    by_id = {r["cell_id"]: r for r in records}
    ratios: Dict[str, List[float]] = {}
    for r in static:
        twin = by_id.get(r["cell_id"].replace("-static", ""))
        if twin and r.get("p50_ms") and twin.get("p50_ms") and r["status"] == "pass" and twin["status"] == "pass":
            ratios.setdefault(f"{r.get('runtime')} {r.get('refine_mode')}", []).append(r["p50_ms"] / twin["p50_ms"])
    if ratios:
        out.append("p50 static / nonzero (median over twin cells): " + ", ".join(
            f"{k} {float(np.median(v)):.2f}x (n={len(v)})" for k, v in sorted(ratios.items())))
    return out


def contract_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per target (exporter and export options, see :func:`_target`, x runtime): counts of each probe outcome."""
    from .probes import PROBES

    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        if r.get("input_contract"):
            groups.setdefault((_target(r), r.get("runtime")), []).append(r)
    rows = []
    for (target, rt), rs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        row: Dict[str, Any] = {"target": target, "runtime": rt, "cells": len(rs)}
        for p in PROBES:
            n: Dict[str, int] = {}
            for r in rs:
                n[str(r.get(f"probe_{p}"))] = n.get(str(r.get(f"probe_{p}")), 0) + 1
            row[p] = " · ".join(f"{k} {v}" for k, v in sorted(n.items()))
        rows.append(row)
    return rows


TARGET_AXES = ("crop_method", "replace_method", "refine_mode", "opset", "simplify")


def target_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per deployment target (runtime x exporter x precision): how many configurations that ran here
    pass, which values of each knob work (``unfold 8/8 · roi_align 0/8``: passing / run), and the
    fastest end-to-end p50 of the passing ones per refine mode / downsample ratio (``p50_best``, ms: modes
    compute different things, so they are never pooled). ``skip`` cells are counted apart: they
    say nothing about the target, only about this machine."""
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
            if r.get("p50_ms") is None:
                continue
            sem = _semantic(r) or "all"
            best[sem] = min(best.get(sem, float("inf")), float(r["p50_ms"]))
        if best:
            row["p50_best"] = " · ".join(f"{k} {v:.1f}" for k, v in sorted(best.items()))
        bad: Dict[str, int] = {}
        for r in ran:
            if r["status"] not in ("pass", "xpass"):
                k = f"{r['status']} at {r.get('stage')}" + (f" ({r['rule']})" if r.get("rule") else "")
                bad[k] = bad.get(k, 0) + 1
        row["not_passing"] = "; ".join(f"{n} {k}" for k, n in sorted(bad.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return rows


# Paper Table 3 (RTX 2080 Ti, PyTorch FP32, batch 1; spec bgmv2-model.md §5): (backbone, res) -> (fps, GMac)
PAPER_TABLE3 = {
    ("resnet50", "1080x1920"): (60.0, 34.3), ("resnet101", "1080x1920"): (42.5, 44.0),
    ("mobilenetv2", "1080x1920"): (100.6, 9.9), ("resnet50", "2160x3840"): (33.2, 41.5),
    ("resnet101", "2160x3840"): (29.8, 51.2), ("mobilenetv2", "2160x3840"): (45.4, 17.0),
}


def paper_table(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Our FPS beside the paper's (Table 3) for HD/4K batch-1 cells that passed: per backbone and
    resolution, the best eager / TorchScript / ONNX runtime in fp32 and fp16, and GMac per frame."""
    rows: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        key = (r.get("backbone"), r.get("resolution"))
        if key not in PAPER_TABLE3 or r.get("batch") != 1:
            continue
        fps, gmac = PAPER_TABLE3[key]
        row = rows.setdefault(key, {"backbone": key[0], "resolution": key[1], "paper_fps": fps, "paper_gmac": gmac,
                                    "gmac": None})
        if r.get("gmac") is not None:
            row["gmac"] = r["gmac"]
        if r.get("status") not in ("pass", "xpass") or not r.get("fps"):
            continue
        col = f"{r.get('exporter')}_{r.get('precision')}"
        cur = row.get(col)
        if cur is None or r["fps"] > cur[0]:
            row[col] = (r["fps"], r.get("runtime"))
    return [rows[k] for k in sorted(rows)]


def _plots(records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Base64 PNGs: latency distribution per runtime and precision; speed vs parity scatter.
    Empty with a ``skipped`` entry when matplotlib is missing or nothing was timed."""
    timed = [r for r in records if r.get("p50_ms") is not None]
    if not timed:
        return {}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"skipped": "plots skipped: matplotlib is not installed (pip install matplotlib)"}
    import base64
    import io

    def png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()

    out: Dict[str, str] = {}
    fig = _latency_boxplot(plt, timed)
    if fig is not None:
        out["latency"] = png(fig)
    fig = _speed_parity_scatter(plt, timed, env)
    if fig is not None:
        out["scatter"] = png(fig)
    fig = _recurrent_plot(plt, records)
    if fig is not None:
        out["recurrent"] = png(fig)
    return out


def _recurrent_plot(plt: Any, records: List[Dict[str, Any]]) -> Any:
    """RVM's per-frame error curves (max abs over the six outputs vs eager, log scale), one line per exported
    config (runtimes of one artifact overlap), the fp32 atol as a dashed line; None without RVM records."""
    rows = [r for r in records if r.get("model") == "rvm" and r.get("frame_err_max")]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, prec in zip(axes, ("fp32", "fp16")):
        sel = [r for r in rows if r.get("precision") == prec]
        for r in sel[:40]:
            ys = [max(v, 1e-9) for v in r["frame_err_max"]]
            ax.plot(range(1, len(ys) + 1), ys, color="tab:green" if r["status"] in ("pass", "xpass") else "tab:red",
                    alpha=0.5, linewidth=1)
        ax.set_title(f"RVM {prec}: {len(sel)} cells")
        ax.set_xlabel("frame (states fed back)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("max abs error vs eager")
    fig.tight_layout()
    return fig


def _latency_boxplot(plt: Any, timed: List[Dict[str, Any]]) -> Any:
    """Box plot of every timed call of the passing cells, one row per exporter -> runtime precision and refine
    mode / downsample ratio (configs that compute different things are never lumped together; None: none)."""
    groups: Dict[str, List[float]] = {}
    for r in timed:
        if r.get("status") not in ("pass", "xpass"):
            continue
        sem = _semantic(r)
        label = (f"{r.get('exporter')}{'+sim' if r.get('simplify') else ''} → {r.get('runtime')} {r.get('precision')}"
                 + (f" · {sem}" if sem else ""))
        groups.setdefault(label, []).extend(r.get("latency_samples_ms") or [r["p50_ms"]])
    if groups:
        labels = sorted(groups, key=lambda k: float(np.median(groups[k])))
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.2))
        ax.boxplot([groups[k] for k in labels], vert=False, showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency per call, ms (end-to-end; all timed calls of all passing cells)")
        ax.grid(axis="x", alpha=0.3)
        return fig
    return None


def _semantic(r: Dict[str, Any]) -> str:
    """``mode full`` / ``ratio 0.5``: the model's semantic axis and its value (the grid's header name)."""
    a = _adapter(r)
    ax = getattr(a, "semantic_axis", "")
    head = (getattr(a, "grid_headers", {}) or {}).get(ax, ax.replace("_", " "))
    return f"{head} {r.get(ax)}" if ax and r.get(ax) is not None else ""


def pareto_front(points: List[Tuple[float, float]]) -> List[int]:
    """Indices of the Pareto-optimal points (lower latency and lower error both better), by latency."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    front, best_err = [], float("inf")
    for k in order:
        if points[k][1] < best_err:
            front.append(k)
            best_err = points[k][1]
    return front


def _speed_parity_scatter(plt: Any, timed: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> Any:
    """Pareto chart per precision: p50 (ms) vs judged max abs alpha error of every passing or failing timed
    cell; colour = runtime, marker = refine mode / downsample ratio (the model's semantic axis), dashed line =
    the precision's atol, the Pareto front of the passing cells drawn and labelled (None: nothing judged)."""
    pts = [r for r in timed if r.get("judged_max_abs_pha", r.get("max_abs_pha")) is not None
           and r.get("status") in ("pass", "xpass", "fail")]
    if not pts:
        return None
    precs = sorted({str(r.get("precision")) for r in pts})
    fig, axes = plt.subplots(1, len(precs), figsize=(7.5 * len(precs), 5.2), squeeze=False)
    tols = (env or {}).get("tolerances") or {}
    runtimes = sorted({str(r.get("runtime")) for r in pts})
    colours = {rt: f"C{k % 10}" for k, rt in enumerate(runtimes)}
    sems = sorted({_semantic(r) for r in pts})
    markers = {m: "os^Dv<>pP*"[k % 10] for k, m in enumerate(sems)}
    for ax, prec in zip(axes[0], precs):
        sel = [r for r in pts if str(r.get("precision")) == prec]
        err = [max(float(r.get("judged_max_abs_pha", r.get("max_abs_pha"))), 1e-8) for r in sel]
        for r, e in zip(sel, err):
            ax.scatter(r["p50_ms"], e, c=colours[str(r.get("runtime"))], marker=markers[_semantic(r)], s=24,
                       alpha=0.8 if r["status"] == "pass" else 0.35, edgecolors="k" if r["status"] == "fail" else "none")
        ok = [k for k, r in enumerate(sel) if r["status"] == "pass"]
        front = [ok[k] for k in pareto_front([(sel[k]["p50_ms"], err[k]) for k in ok])]
        if front:
            ax.plot([sel[k]["p50_ms"] for k in front], [err[k] for k in front], "k-", linewidth=1, alpha=0.6)
            for k in front[:8]:
                r = sel[k]
                ax.annotate(f"{r.get('runtime')} · {_target(r)} · {_semantic(r)}", (r["p50_ms"], err[k]), fontsize=7,
                            xytext=(6, 4), textcoords="offset points")
        atol = (tols.get(prec) or {}).get("atol")
        if atol:
            ax.axhline(atol, color="#c62828", linestyle="--", linewidth=1)
            ax.text(ax.get_xlim()[0], atol, f" atol {atol:g}", color="#c62828", fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{prec}: {len(sel)} timed cells, Pareto front of the passing ones")
        ax.set_xlabel("p50 latency, ms (end-to-end)")
        ax.set_ylabel("judged max |alpha - eager|")
        ax.grid(alpha=0.3)
    for rt, c in colours.items():
        axes[0][0].scatter([], [], marker="s", c=c, label=rt)
    for m, mk in markers.items():
        axes[0][0].scatter([], [], marker=mk, c="#555", label=m or "—")
    axes[0][0].scatter([], [], marker="o", c="#bbb", edgecolors="k", label="fail (outlined)")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


READINESS_TARGETS = ("tensorrt", "coreml", "opencv_dnn", "tflite", "openvino")


def readiness_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per analysed ONNX artifact (first record of each exporter/mode/crop/replace/opset/precision/
    onnxsim): node counts, data-dependent ops, TopK K, and per target (ready, reasons)."""
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


def read_benchmark_json(path: Path) -> List[Dict[str, Any]]:
    """Rows from a pytest-benchmark JSON file (``--benchmark-json``): name, cell, stats in ms, machine.

    Raises:
        ValueError: the file is not pytest-benchmark JSON (names the file).
    """
    try:
        data = json.loads(Path(path).read_text())
        machine = data["machine_info"]
        benches = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({type(e).__name__}: {e})") from None
    rows = []
    for b in benches:
        st = b["stats"]
        rows.append({
            "name": b.get("name"), "cell_id": (b.get("extra_info") or {}).get("cell_id", b.get("param")),
            "median_ms": st["median"] * 1e3, "mean_ms": st["mean"] * 1e3, "stddev_ms": st["stddev"] * 1e3,
            "min_ms": st["min"] * 1e3, "max_ms": st["max"] * 1e3, "rounds": st["rounds"],
            "ops": st.get("ops"), "cpu": (machine.get("cpu") or {}).get("brand_raw"),
            "datetime": data.get("datetime"),
        })
    return rows


def write_report(out_dir: Path, records: Optional[List[Dict[str, Any]]] = None,
                 meta: Optional[Dict[str, Any]] = None, benchmark_json: Optional[Path] = None) -> Dict[str, Path]:
    """Write results.csv, report.html, summary.md (and environment.json when ``meta`` is given).

    ``records`` default to those read from ``out_dir/results.jsonl``. Returns the written paths.
    """
    out_dir = Path(out_dir)
    if records is None:
        records = read_records(out_dir / "results.jsonl")
    env_path = out_dir / "environment.json"
    if meta is not None:
        env_path.write_text(json.dumps(environment(meta), indent=2, default=str))
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    _write_csv(out_dir / "results.csv", records)
    counts = {s: 0 for s in STATUS_ORDER}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    findings = _findings(records) + static_findings(records) + contract_findings(records)
    from .decide import decide

    decisions = decide(records, env)
    _write_html(out_dir, records, env, counts, findings, benchmark_json, decisions)
    (out_dir / "summary.md").write_text(_summary_md(records, env, counts, findings, decisions), encoding="utf-8")
    write_junit(out_dir / "junit.xml", records, env)
    return {k: out_dir / v for k, v in (("csv", "results.csv"), ("html", "report.html"), ("md", "summary.md"),
                                        ("junit", "junit.xml"))}


def write_junit(path: Path, records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> None:
    """JUnit XML, one ``testcase`` per cell (``classname`` = model.runtime.precision, ``name`` = cell id,
    ``time`` = the cell's seconds), mapped as pytest's junitxml does: ``fail`` and ``xpass`` -> ``failure``
    (xpass as a strict xfail: the rule no longer holds), ``error``/``crash``/``timeout`` -> ``error``,
    ``skip`` -> ``skipped``, ``xfail`` -> ``skipped`` with ``type="xfail"``; the reason is the message."""
    import xml.etree.ElementTree as ET

    env = env or {}
    n = {k: 0 for k in ("failures", "errors", "skipped")}
    suite = ET.Element("testsuite", name=f"matting-export-matrix.{env.get('profile', 'run')}")
    total = 0.0
    for r in records:
        st = r.get("status")
        t = float(r.get("cell_s") or 0.0)
        total += t
        tc = ET.SubElement(suite, "testcase", classname=f"{r.get('model') or 'bgmv2'}.{r.get('runtime')}.{r.get('precision')}",
                           name=str(r.get("cell_id")), time=f"{t:.3f}")
        reason = str(r.get("reason") or "")
        if st in ("fail", "xpass"):
            n["failures"] += 1
            ET.SubElement(tc, "failure", message=reason[:500], type=st).text = (
                f"{st} at stage {r.get('stage')}: {reason}\n{r.get('parity') or r.get('parity_note') or ''}")
        elif st in ("error", "crash", "timeout"):
            n["errors"] += 1
            ET.SubElement(tc, "error", message=reason[:500], type=st).text = f"{st} at stage {r.get('stage')}: {reason}"
        elif st in ("skip", "xfail"):
            n["skipped"] += 1
            ET.SubElement(tc, "skipped", message=reason[:500], type="xfail" if st == "xfail" else "skip")
    suite.set("tests", str(len(records)))
    for k, v in n.items():
        suite.set(k, str(v))
    suite.set("time", f"{total:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def csv_columns(records: List[Dict[str, Any]]) -> List[str]:
    """results.csv's columns: every field of the typed record in declaration order (:func:`harness.record.columns`:
    identity, outcome, parity, latency, export, ...), so the header is the same for every run; then fields of
    records written by an older version, sorted. Per-call samples (``latency_samples_ms``) stay in the JSONL."""
    from .record import columns

    declared = [c for c in columns() if c != "latency_samples_ms"]
    known = set(declared) | {"latency_samples_ms"}
    return declared + sorted({k for r in records for k in r if k not in known})


def _write_csv(path: Path, records: List[Dict[str, Any]]) -> None:
    """results.csv (pandas) with the columns of :func:`csv_columns`."""
    import pandas as pd

    pd.DataFrame(records, columns=csv_columns(records)).to_csv(path, index=False)


TABLE_COLUMNS = ["cell_id", "status", "reason", "model", "runtime", "exporter", "precision", "opset", "config",
                 "resolution", "batch", "parity_ref", "judged_max_abs_pha", "violation_frac_pha", "p50_ms", "p90_ms", "cv"]
FILTER_COLUMNS = ["model", "status", "runtime", "exporter", "precision", "opset", "resolution", "batch", "parity_ref"]


def _config_cell(r: Dict[str, Any]) -> str:
    """The 'config' column: the network and the model's knobs (exporter and opset have their own columns)."""
    from .decide import config_label

    a = _adapter(r)
    net = [str(r.get(k)) for k in a.grid_group_axes if r.get(k) is not None]
    rest = config_label(r).split(" · ", 1)
    knobs = rest[1] if len(rest) > 1 else ""
    sim = "onnxsim" if r.get("simplify") else ""
    return " · ".join(x for x in [*net, knobs, sim] if x)


def table_rows(records: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """The 'All cells' rows: display strings for :data:`TABLE_COLUMNS` (reason whole: it wraps)."""
    out = []
    for r in records:
        row = {c: _fmt(r.get(c)) for c in TABLE_COLUMNS}
        row["reason"] = str(r.get("reason") or "")
        row["config"] = _config_cell(r)
        if row["model"] == "":
            row["model"] = "bgmv2"
        out.append(row)
    return out


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as ``\\u`` escapes (no ``</script>``,
    no ``<!--`` can end or confuse the element)."""
    return (json.dumps(obj, separators=(",", ":"), default=str)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _table_json(records: List[Dict[str, Any]], env: Dict[str, Any], out_dir: Optional[Path]) -> str:
    """The 'All cells' data, once: column names, one array of display strings per cell, the filterable
    columns, and the inspector's details per cell id (the page renders the table from it)."""
    rows = table_rows(records)
    return _script_json({"cols": TABLE_COLUMNS, "rows": [[r[c] for c in TABLE_COLUMNS] for r in rows],
                         "filters": FILTER_COLUMNS, "details": cell_details(records, env, out_dir)})


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
            lines.append(f"max abs pha over every pixel {_fmt(r['max_abs_pha'])}; judged {_fmt(r.get('judged_max_abs_pha'))}"
                         f"; fgr judged {_fmt(r.get('judged_max_abs_fgr', r.get('max_abs_fgr')))}")
        if r.get("p50_ms") is not None:
            ci = r.get("p50_ci_ms")
            ci_txt = f" (95 % CI {_fmt(ci[0])}–{_fmt(ci[1])})" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
            stop = {"ci": "stopped when the p50's CI was tight enough", "max": "stopped at the time cap",
                    "min": "stopped at the protocol's minimums"}.get(r.get("latency_stop") or "", "")
            lines.append(f"latency p50 {_fmt(r['p50_ms'])}{ci_txt} / p90 {_fmt(r.get('p90_ms'))} / p99 {_fmt(r.get('p99_ms'))} ms, "
                         f"cv {_fmt(r.get('cv'))}, {r.get('latency_runs')} calls{'; ' + stop if stop else ''}; "
                         f"compute p50 {_fmt(r.get('compute_p50_ms'))} ms")
        if r.get("latency_warning"):
            lines.append(f"latency: {r['latency_warning']}")
        if r.get("export_s") is not None or r.get("load_s") is not None:
            lines.append(f"export {_fmt(r.get('export_s'))} s, load {_fmt(r.get('load_s'))} s")
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


def _write_html(out_dir: Path, records: List[Dict[str, Any]], env: Dict[str, Any], counts: Dict[str, int],
                findings: List[str], benchmark_json: Optional[Path], decisions: Optional[List[Any]] = None) -> None:
    import jinja2
    import pandas as pd

    tmpl = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    ).get_template("report.html.j2")
    bench_rows = read_benchmark_json(benchmark_json) if benchmark_json else []
    if bench_rows:
        pd.DataFrame(bench_rows).to_csv(out_dir / "benchmark.csv", index=False)
    from .decide import failure_groups

    html = tmpl.render(
        decisions=decisions or [], causes=failure_groups(records, env), table_json=_table_json(records, env, out_dir),
        p50_of={r["cell_id"]: r.get("p50_ms") for r in records},
        env=env, counts=counts, grids=_grid(records), table_cols=TABLE_COLUMNS,
        fmt=_fmt, findings=findings, total=len(records), paper=paper_table(records),
        plots=_plots(records, env), bench_rows=bench_rows, benchmark_json=str(benchmark_json or ""),
        readiness=readiness_rows(records), targets=READINESS_TARGETS, target_rows=target_rows(records),
        contract=contract_rows(records), rvm=rvm_rows(records),
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")


def _md_cell(text: Any) -> str:
    return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def decision_md(decisions: List[Any], env: Dict[str, Any]) -> List[str]:
    """The "what to ship" table (primary comparison shape per target) as Markdown lines."""
    md = ["", "## What to ship, per target", "",
          "Choice rule: parity gates (status pass), then p50 differences whose 95 % bootstrap CI clears 5 %; "
          "ties go to the more portable artifact (more runtimes passing the same file, fewer data-dependent ops). "
          "p50 is end-to-end wall time per call (see the report's latency definitions).", "",
          "| model | target | shape | recommended config | p50 ms (95 % CI) | judged max abs (atol) | runner-up: why it lost |",
          "|---|---|---|---|---|---|---|"]
    for d in decisions:
        if not d.primary:
            continue
        if d.recommended is None:
            causes = "; ".join(f"{g['count']} × {g['cause']}" + (f" ([evidence]({g['evidence']}))" if g["evidence"] else "")
                               for g in d.blocked[:3])
            md.append(f"| {d.model} | {d.target} | {d.shape_label} | **blocked**: nothing passes ({d.ran} ran) | | | "
                      f"{_md_cell(causes)} |")
            continue
        c = d.recommended
        p50 = f"{c.p50_ms:.1f}" if c.p50_ms is not None else "not timed"
        if c.p50_ci:
            p50 += f" ({c.p50_ci[0]:.1f}–{c.p50_ci[1]:.1f})"
        acc = d.accuracy
        err = f"{acc['max_abs']:.1e} ({acc['atol']:g})" if acc.get("max_abs") is not None and acc.get("atol") else ""
        ru = f"{d.runner_up.label}: {d.why_runner_up_lost}" if d.runner_up else "only passing config"
        md.append(f"| {d.model} | {d.target} | {d.shape_label} | {_md_cell(c.label)} | {p50} | {err} | {_md_cell(ru)} |")
    return md


def unexpected_md(records: List[Dict[str, Any]], env: Dict[str, Any]) -> List[str]:
    """Unexpected results grouped by cause (never 100 near-identical rows)."""
    from .decide import failure_groups
    from .records import UNEXPECTED_STATUSES

    bad = [r for r in records if r["status"] in UNEXPECTED_STATUSES]
    if not bad:
        return []
    md = ["", f"## Unexpected results ({len(bad)})", "", "| cause | cells | example | reason |", "|---|---|---|---|"]
    for g in failure_groups(bad, env)[:30]:
        md.append(f"| {_md_cell(g['cause'])} | {g['count']} | `{g['example']}` | {_md_cell(g['reason'])[:200]} |")
    return md


def _summary_md(records: List[Dict[str, Any]], env: Dict[str, Any], counts: Dict[str, int], findings: List[str],
                decisions: Optional[List[Any]] = None) -> str:
    md = [f"# Export matrix summary — profile `{env.get('profile', '?')}`", ""]
    md.append(f"{len(records)} cells · " + " · ".join(f"{s}: {n}" for s, n in counts.items() if n))
    if env.get("wall_s") is not None:
        md.append(f"\nWall time: {env['wall_s']:.1f} s on {env.get('cpu', '?')} (torch {env.get('torch')}, "
                  f"onnxruntime {env.get('onnxruntime')})")
    md += unexpected_md(records, env)
    if decisions:
        md += decision_md(decisions, env)
    if findings:
        md += ["", "## Findings", ""] + [f"- {f}" for f in findings]
    md += ["", "## Per target (runtime x exporter x precision)", "",
           "| runtime | exporter | precision | passing / ran | skipped | crop | replace | mode | opset | "
           "fastest p50 per mode, ms | not passing |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in target_rows(records):
        p50 = t.get("p50_best", "")
        md.append(f"| {t['runtime']} | {t['exporter']} | {t['precision']} | {t['passing']}/{t['ran']} | {t['skipped']} "
                  f"| {t.get('crop_method', '')} | {t.get('replace_method', '')} | {t.get('refine_mode', '')} "
                  f"| {t.get('opset', '')} | {p50} | {t['not_passing'] or t.get('skip_reason', '')} |")
    contract = contract_rows(records)
    if contract:
        md += ["", "## Input contract (what each artifact does with inputs the model must not take)", "",
               "| target | runtime | cells | size (H,W not multiples of 4) | dtype | channels (RGBA) | range (0-255) |",
               "|---|---|---|---|---|---|---|"]
        for c in contract:
            md.append(f"| {c['target']} | {c['runtime']} | {c['cells']} | {c['size']} | {c['dtype']} | {c['channels']} "
                      f"| {c['range']} |")
    return "\n".join(md) + "\n"
