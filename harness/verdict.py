"""A cell's parity verdict from its outputs and the eager references, shared by ``run`` and ``verify``.

fp32 cells are judged against eager fp32. A reduced-precision (fp16) cell is judged against eager
PyTorch in the same precision on the same inputs — the pixels themselves, with the fp16 tolerance, so a
graph that corrupts 0.5 % of the pixels by 0.25 fails — and it also passes when it meets the fp16
tolerance against eager fp32. How far the cell and eager fp16 each drift from fp32 is recorded and
explained in ``parity_note`` (eager fp16 itself moves alpha by up to ~0.18 on these weights: a large
drift from fp32 is then the precision's, not the graph's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .parity import JUDGED_OUTPUTS, OUTPUT_NAMES, ParityResult, Selection, ShapeMismatch, compare, to_full_res
from .values import Tolerance


@dataclass
class Verdict:
    """``passed``, the failure ``reason`` (empty on pass), the comparison that decided (``best``), every
    comparison made (``results``) and the record fields (``record``: CSV/JSONL columns)."""

    passed: bool
    reason: str
    best: Optional[ParityResult]  # None for the elementwise judge (:func:`elementwise_verdict`)
    results: List[ParityResult]
    record: Dict[str, Any] = field(default_factory=dict)


def record_fields(outputs: Sequence[str], references: Sequence[str] = ("fp32", "fp16")) -> Dict[str, Any]:
    """Declaration of the record fields :func:`judge_outputs` writes (``{name: type}``, see
    :mod:`harness.record`) for a model whose judged outputs are ``outputs`` (e.g. ``pha``, ``fgr``, ...)."""
    fields: Dict[str, Any] = {"parity_ref": str}
    for name in outputs:
        fields.update({f"{stat}_{name}": float for stat in ("max_abs", "judged_max_abs", "mean_abs", "p99_abs",
                                                            "violation_frac", "unmasked_violation_frac", "psnr")})
    fields.update({k: int for k in ("ref_cells", "ref_cells_eager", "ref_cells_ref", "ref_disagreements",
                                    "ref_nontie_disagreements", "nonfinite")})
    fields.update(ref_iou=float, ref_counts=str, ref_counts_eager=str, min_passing_atol=float)
    for ref in references:
        fields.update({f"max_abs_pha_vs_{ref}": float, f"judged_max_abs_pha_vs_{ref}": float,
                       f"violation_frac_pha_vs_{ref}": float, f"ref_iou_vs_{ref}": float})
    fields.update(eager_drift_max_abs_pha=float, eager_drift_violation_frac_pha=float,
                  drift_profile=Dict[str, Any], parity_note=str, parity=str)
    return fields


def _fields(best: ParityResult) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"parity_ref": best.reference}
    for name, st in best.outputs.items():
        rec[f"max_abs_{name}"] = st.max_abs
        rec[f"judged_max_abs_{name}"] = st.judged_max_abs
        rec[f"mean_abs_{name}"] = st.mean_abs
        rec[f"p99_abs_{name}"] = st.p99_abs
        rec[f"violation_frac_{name}"] = st.judged_violation_frac
        rec[f"unmasked_violation_frac_{name}"] = st.violation_frac
        if st.psnr is not None:
            rec[f"psnr_{name}"] = st.psnr if np.isfinite(st.psnr) else 999.0
    rec.update(ref_iou=best.ref_iou, ref_cells=best.ref_cells, ref_cells_eager=best.ref_cells_ref,
               ref_cells_ref=best.ref_cells_ref, ref_disagreements=best.ref_disagreements,
               ref_nontie_disagreements=best.ref_nontie_disagreements,
               ref_counts=",".join(map(str, best.ref_counts)), ref_counts_eager=",".join(map(str, best.ref_counts_ref)),
               min_passing_atol=best.min_passing_atol,
               nonfinite=sum(st.nonfinite for st in best.outputs.values()))
    return rec


def _note(best: ParityResult, other: Optional[ParityResult], eager: Optional[ParityResult],
          tol: Tolerance) -> str:
    pha = best.outputs["pha"]
    text = (f"{'within' if best.passed else 'outside'} tolerance of eager {best.reference}: alpha max {pha.judged_max_abs:.3g}, "
            f"{pha.judged_violation_frac:.2%} of pixels beyond atol {tol.atol:g} (limit {tol.max_violation_frac:.2%}), "
            f"{best.ref_nontie_disagreements} refined cells differ beyond a near-tie")
    if other is not None:
        o = other.outputs["pha"]
        text += f"; against eager {other.reference}: alpha max {o.judged_max_abs:.3g}, {o.judged_violation_frac:.2%} beyond atol"
    if eager is not None:
        e = eager.outputs["pha"]
        text += (f"; eager {best.reference if best.reference != 'fp32' else 'fp16'} itself vs fp32: alpha max "
                 f"{e.judged_max_abs:.3g}, {e.judged_violation_frac:.2%} beyond atol (the precision's own drift)")
    return text


DRIFT_QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)


def _agreeing_pixels(*ref_maps: np.ndarray) -> np.ndarray:
    """Full-resolution mask ``(B,1,H,W)`` of the pixels whose quarter-res cell every map refines alike."""
    sel = [m > 0.5 for m in ref_maps]
    agree = np.ones_like(sel[0])
    for m in sel[1:]:
        agree &= m == sel[0]
    return to_full_res(agree)


def drift_profile(outs: Sequence[np.ndarray], ref32: Sequence[np.ndarray], ref_same: Sequence[np.ndarray],
                  tol: Tolerance, crop_to: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """Compare the cell's drift from eager fp32 with eager's own drift in the same precision, quantile by
    quantile (:data:`DRIFT_QUANTILES`: median to max) on every judged output.

    The cell passes an output when, at each quantile q, ``Q_q(|cell - fp32|) <= max(factor * Q_q(|eager_p -
    fp32|), atol)`` with ``factor = tol.eager_drift_factor``. A backend with the precision's ordinary rounding
    noise stays near ratio 1 at every quantile (onnxruntime fp16 measured 0.89-1.23 against eager fp16's);
    a graph that corrupts 0.5 % of the pixels by 0.25 breaks the 99.9 % quantile (0.25 vs a limit of
    ~0.22 here) even though its max stays near eager's own. Pixels of cells refined differently by any of
    the three are left out (their selection is judged separately). Returns ``{"failures": [...],
    "profile": {output: (cell quantiles, eager quantiles)}}``; values in output units.
    """
    factor = tol.eager_drift_factor or 1.0
    o = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, outs)}
    r = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, ref32)}
    e = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, ref_same)}
    mask = _agreeing_pixels(r["ref_sm"], e["ref_sm"], o["ref_sm"])
    failures: List[str] = []
    profile: Dict[str, Any] = {}
    for n in JUDGED_OUTPUTS:
        m = np.broadcast_to(mask, o[n].shape) if n in ("pha", "fgr") else np.ones(o[n].shape, dtype=bool)
        if crop_to is not None and n in ("pha", "fgr"):
            m = m.copy()
            m[..., crop_to[0]:, :] = False
            m[..., :, crop_to[1]:] = False
        dc, de = np.abs(o[n] - r[n])[m], np.abs(e[n] - r[n])[m]
        if not dc.size:
            continue
        qc, qe = np.quantile(dc, DRIFT_QUANTILES), np.quantile(de, DRIFT_QUANTILES)
        profile[n] = ([round(float(x), 4) for x in qc], [round(float(x), 4) for x in qe])
        for q, c, ev in zip(DRIFT_QUANTILES, qc, qe):
            limit = max(factor * ev, tol.atol)
            if not c <= limit:
                failures.append(f"{n}: drift from fp32 at the {q:.1%} quantile is {c:.3g}, above {factor:g}x eager's "
                                f"own {ev:.3g} in this precision")
                break
    return {"failures": failures, "profile": profile}


def judge_outputs(outs: Sequence[np.ndarray], ref32: Sequence[np.ndarray], ref_same: Optional[Sequence[np.ndarray]],
                  tol: Tolerance, selection: Optional[Selection], precision: str = "fp32",
                  crop_to: Optional[Tuple[int, int]] = None) -> Verdict:
    """Judge a candidate's six outputs (:data:`harness.parity.OUTPUT_NAMES` order, ``(B,C,H,W)``).

    ``ref32``: eager fp32 outputs on the same inputs; ``ref_same``: eager outputs in the cell's reduced
    precision (None for fp32 cells); ``tol``: the precision's :class:`~harness.config.Tolerance`.

    fp32: the cell passes when :func:`~harness.parity.compare` against eager fp32 passes. Reduced precision:
    it passes when it meets the tolerance against eager in its own precision or against eager fp32; else
    when its refined cells agree with eager's in its precision (no non-tie disagreement, same counts, no
    NaN/Inf) and its drift from fp32 stays within ``eager_drift_factor`` times eager's own at every quantile
    (:func:`drift_profile`); ``parity_ref`` then says "fp16 drift profile".

    Raises:
        harness.parity.ShapeMismatch: output count or shapes differ from the reference's.
    """
    r32 = compare(outs, ref32, tol, "fp32", selection, crop_to)
    results = [r32]
    eager = None
    drift: Optional[Dict[str, Any]] = None
    if ref_same is not None:
        rs = compare(outs, ref_same, tol, precision, selection, crop_to)
        results.append(rs)
        eager = compare(ref_same, ref32, tol, "fp32", selection, crop_to)
        best = rs if (rs.passed or not r32.passed) else r32
    else:
        best = r32
    passed = best.passed
    reason = ""
    if not passed and ref_same is not None and tol.eager_drift_factor is not None:
        structural = [f for f in best.failures if f.startswith("ref_sm") or "non-finite" in f]
        drift = drift_profile(outs, ref32, ref_same, tol, crop_to)
        passed = not structural and not drift["failures"]
        reason = "; ".join(structural + drift["failures"])
    elif not passed:
        reason = "; ".join(best.failures)
    if not passed:
        reason += f" (vs eager {best.reference})"
    other = next((r for r in results if r is not best), None)
    return Verdict(passed, reason, best, results, _verdict_fields(best, other, eager, drift, passed, precision, tol))


def _verdict_fields(best: ParityResult, other: Optional[ParityResult], eager: Optional[ParityResult],
                    drift: Optional[Dict[str, Any]], passed: bool, precision: str, tol: Tolerance) -> Dict[str, Any]:
    """Record fields of a verdict: the judged reference's statistics, the other reference's headline numbers,
    eager's own drift from fp32 (reduced precision), the drift profile and the human-readable ``parity_note``."""
    rec = _fields(best)
    if other is not None:
        rec[f"max_abs_pha_vs_{other.reference}"] = other.outputs["pha"].max_abs
        rec[f"judged_max_abs_pha_vs_{other.reference}"] = other.outputs["pha"].judged_max_abs
        rec[f"violation_frac_pha_vs_{other.reference}"] = other.outputs["pha"].judged_violation_frac
        rec[f"ref_iou_vs_{other.reference}"] = other.ref_iou
    if eager is not None:
        rec["eager_drift_max_abs_pha"] = eager.outputs["pha"].judged_max_abs
        rec["eager_drift_violation_frac_pha"] = eager.outputs["pha"].judged_violation_frac
    note = ("pass: " if passed else "fail: ") + _note(best, other, eager, tol)
    if drift is not None:
        prof = drift["profile"].get("pha")
        if passed:
            rec["parity_ref"] = f"{precision} drift profile"
            note = (f"pass by the {precision} drift profile (not within tolerance of either reference): "
                    + note.removeprefix("pass: "))
        if prof:
            note += (f"; alpha drift from fp32 at quantiles {'/'.join(f'{q:g}' for q in DRIFT_QUANTILES)}: cell "
                     f"{prof[0]} vs eager {precision} {prof[1]} (limit {tol.eager_drift_factor:g}x)")
        rec["drift_profile"] = drift["profile"]
    rec["parity_note"] = note
    rec["parity"] = best.summary()
    return rec


# ------------------------------------------------------------------------------------------ elementwise
def elementwise_fields(outputs: Sequence[str]) -> Dict[str, Any]:
    """Declaration of the record fields :func:`elementwise_verdict` writes for ``outputs`` (``{name: type}``)."""
    fields: Dict[str, Any] = {"parity_ref": str, "parity_note": str, "parity": str}
    for n in outputs:
        fields.update({f"max_abs_{n}": float, f"mean_abs_{n}": float, f"violation_frac_{n}": float})
    return fields


@dataclass
class ElementwiseResult:
    """One comparison of :func:`elementwise_verdict`: the reference's name (``fp32``/``fp16``), per output
    ``(max abs, mean abs, fraction beyond atol + rtol*|ref|)`` and the failure lines (empty: passes)."""

    reference: str
    stats: Dict[str, Tuple[float, float, float]]
    failures: List[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def _elementwise(outs: Sequence[np.ndarray], ref: Sequence[np.ndarray], names: Sequence[str], tol: Tolerance,
                 label: str) -> ElementwiseResult:
    if len(outs) != len(ref):
        raise ShapeMismatch(f"{len(outs)} outputs, the reference has {len(ref)} ({', '.join(names)})")
    stats: Dict[str, Tuple[float, float, float]] = {}
    failures: List[str] = []
    for n, o, r in zip(names, outs, ref):
        o, r = np.asarray(o, dtype=np.float32), np.asarray(r, dtype=np.float32)
        if o.shape != r.shape:
            raise ShapeMismatch(f"{n}: candidate shape {tuple(o.shape)}, reference {tuple(r.shape)}")
        if not (np.isfinite(o).all() and np.isfinite(r).all()):
            stats[n] = (float("inf"), float("inf"), 1.0)
            failures.append(f"{n}: non-finite values (candidate {int((~np.isfinite(o)).sum())}, "
                            f"reference {int((~np.isfinite(r)).sum())})")
            continue
        d = np.abs(o - r)
        viol = float((d > tol.atol + tol.rtol * np.abs(r)).mean()) if d.size else 0.0
        stats[n] = (float(d.max()) if d.size else 0.0, float(d.mean()) if d.size else 0.0, viol)
        if viol > tol.max_violation_frac:
            failures.append(f"{n}: max abs {stats[n][0]:.3g}, {viol:.2%} of values beyond atol {tol.atol:g} "
                            f"(limit {tol.max_violation_frac:.2%})")
    return ElementwiseResult(label, stats, failures)


def elementwise_verdict(outs: Sequence[np.ndarray], ref32: Sequence[np.ndarray],
                        ref_same: Optional[Sequence[np.ndarray]], tol: Tolerance, names: Sequence[str],
                        precision: str = "fp32") -> Verdict:
    """The default judge of a model adapter (:meth:`harness.models.ModelAdapter.judge`) for models whose
    outputs are compared value by value: every output must be finite and have at most
    ``tol.max_violation_frac`` of its values beyond ``atol + rtol * |ref|``. A reduced-precision cell passes
    against eager in its own precision or against eager fp32 (the comparison that passes is recorded as
    ``parity_ref``). BGMv2 needs more (near-tie patch selection: :func:`judge_outputs`).

    Raises:
        harness.parity.ShapeMismatch: output count or shapes differ from the reference's (``fail``)."""
    r32 = _elementwise(outs, ref32, names, tol, "fp32")
    best = r32
    if ref_same is not None:
        rs = _elementwise(outs, ref_same, names, tol, precision)
        best = rs if (rs.passed or not r32.passed) else r32
    rec: Dict[str, Any] = {"parity_ref": best.reference}
    for n, (mx, mean, viol) in best.stats.items():
        rec.update({f"max_abs_{n}": mx, f"mean_abs_{n}": mean, f"violation_frac_{n}": viol})
    summary = ", ".join(f"{n} max {mx:.3g}" for n, (mx, _, _) in best.stats.items())
    rec["parity"] = summary
    if best.passed:
        rec["parity_note"] = f"pass: within tolerance of eager {best.reference} on every output ({summary})"
        return Verdict(True, "", None, [], rec)  # type: ignore[arg-type]
    reason = "; ".join(best.failures) + f" (vs eager {best.reference})"
    rec["parity_note"] = "fail: " + reason
    return Verdict(False, reason, None, [], rec)  # type: ignore[arg-type]
