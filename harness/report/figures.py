"""The report's figures as base64 PNGs: latency distribution, latency vs accuracy (Pareto front per
precision), one of each per model, resolution and batch (latencies of different models or image sizes are
never drawn on one axis or joined by one front), and the figures of the models' own report sections.
matplotlib is an optional, heavy backend: it is imported only when a figure is drawn (:func:`_pyplot`), and
the report says so when it is missing."""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..models import ReportSection, record_owner
from .tables import semantic_label, target_label

MISSING = "plots skipped: matplotlib is not installed (pip install matplotlib)"
# a Pareto chart of fewer cells says nothing the tables do not (and costs ~0.3 s to draw)
MIN_SCATTER_CELLS = 4


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or None where matplotlib is not installed."""
    try:  # the one lazy import of this package: matplotlib is optional and slow to import
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _finite(v: Any) -> bool:
    """``v`` is a finite number (not None, NaN or infinite)."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def _png(plt: Any, fig: Any) -> str:
    """``fig`` as a base64 PNG (90 dpi); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figure_groups(records: List[Dict[str, Any]]) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """``[(title, records)]``: the records split by model, network (the model's ``grid_group_axes``),
    resolution and batch, e.g. ``bgmv2 · mobilenetv2 · 288x512 · batch 1``; sorted by title. A figure draws
    one group: latencies of different models or image sizes are not comparable."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in records:
        a = record_owner(r)
        parts = [a.name, *(str(r.get(k)) for k in a.grid_group_axes if r.get(k) is not None),
                 str(r.get("resolution")), f"batch {r.get('batch')}"]
        groups.setdefault(" · ".join(parts), []).append(r)
    return sorted(groups.items())


def plots(records: List[Dict[str, Any]], env: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Base64 PNGs per group of :func:`figure_groups`: ``latency`` (distribution per runtime and precision)
    and ``scatter`` (speed vs parity, for groups of at least :data:`MIN_SCATTER_CELLS` timed cells), each a
    list of ``{"title", "png"}`` (groups with nothing to draw left out). Empty when nothing was timed; only a
    ``skipped`` entry (why) when matplotlib is missing."""
    timed = [r for r in records if _finite(r.get("p50_ms"))]  # a NaN p50 cannot be placed on a log axis
    if not timed:
        return {}
    plt = _pyplot()
    if plt is None:
        return {"skipped": MISSING}
    out: Dict[str, Any] = {"latency": [], "scatter": []}
    for title, group in figure_groups(timed):
        fig = _latency_boxplot(plt, group)
        if fig is not None:
            out["latency"].append({"title": title, "png": _png(plt, fig)})
        fig = _speed_parity_scatter(plt, group, env) if len(group) >= MIN_SCATTER_CELLS else None
        if fig is not None:
            out["scatter"].append({"title": title, "png": _png(plt, fig)})
    return {k: v for k, v in out.items() if v}


def section_figures(sections: List[ReportSection]) -> Dict[str, str]:
    """``{section id: base64 PNG}`` of the sections that draw a figure (their ``figure`` callable, given
    ``matplotlib.pyplot``, returned one); empty where matplotlib is missing."""
    todo = [s for s in sections if s.figure is not None]
    plt = _pyplot() if todo else None
    out: Dict[str, str] = {}
    for s in todo if plt is not None else []:
        fig = s.figure(plt)
        if fig is not None:
            out[s.id] = _png(plt, fig)
    return out


def _latency_boxplot(plt: Any, timed: List[Dict[str, Any]]) -> Any:
    """Box plot of every timed call of the passing cells of one group (:func:`figure_groups`), one row per
    exporter -> runtime precision and value of the model's semantic axis (configs that compute different
    things are never lumped together; None: no passing cell)."""
    groups: Dict[str, List[float]] = {}
    for r in timed:
        if r.get("status") not in ("pass", "xpass"):
            continue
        sem = semantic_label(r)
        label = (f"{r.get('exporter')}{'+sim' if r.get('simplify') else ''} → {r.get('runtime')} {r.get('precision')}"
                 + (f" · {sem}" if sem else ""))
        samples = [v for v in r.get("latency_samples_ms") or [r["p50_ms"]] if _finite(v)]
        groups.setdefault(label, []).extend(samples or [r["p50_ms"]])
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
    """Pareto chart per precision of one group (:func:`figure_groups`): p50 (ms) vs judged max abs alpha
    error of every passing or failing timed cell; colour = runtime, marker = the value of the model's semantic
    axis, dashed line = the precision's atol, the Pareto front of the passing cells drawn and labelled (None:
    nothing judged)."""
    pts = [r for r in timed if _finite(r.get("judged_max_abs_pha", r.get("max_abs_pha")))
           and r.get("status") in ("pass", "xpass", "fail")]
    if not pts:
        return None
    precs = sorted({str(r.get("precision")) for r in pts})
    fig, axes = plt.subplots(1, len(precs), figsize=(7.5 * len(precs), 5.2), squeeze=False)
    tols = (env or {}).get("tolerances") or {}
    runtimes = sorted({str(r.get("runtime")) for r in pts})
    colours = {rt: f"C{k % 10}" for k, rt in enumerate(runtimes)}
    sems = sorted({semantic_label(r) for r in pts})
    markers = {m: "os^Dv<>pP*"[k % 10] for k, m in enumerate(sems)}
    for ax, prec in zip(axes[0], precs):
        sel = [r for r in pts if str(r.get("precision")) == prec]
        err = [max(float(r.get("judged_max_abs_pha", r.get("max_abs_pha"))), 1e-8) for r in sel]
        for r, e in zip(sel, err):
            ax.scatter(r["p50_ms"], e, c=colours[str(r.get("runtime"))], marker=markers[semantic_label(r)], s=24,
                       alpha=0.8 if r["status"] == "pass" else 0.35, edgecolors="k" if r["status"] == "fail" else "none")
        ok = [k for k, r in enumerate(sel) if r["status"] == "pass"]
        front = [ok[k] for k in pareto_front([(sel[k]["p50_ms"], err[k]) for k in ok])]
        if front:
            ax.plot([sel[k]["p50_ms"] for k in front], [err[k] for k in front], "k-", linewidth=1, alpha=0.6)
            for k in front[:8]:
                r = sel[k]
                ax.annotate(f"{r.get('runtime')} · {target_label(r)} · {semantic_label(r)}", (r["p50_ms"], err[k]),
                            fontsize=7, xytext=(6, 4), textcoords="offset points")
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
