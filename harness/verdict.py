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
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .config import Tolerance
from .parity import ParityResult, Selection, compare


@dataclass
class Verdict:
    """``passed``, the failure ``reason`` (empty on pass), the comparison that decided (``best``), every
    comparison made (``results``) and the record fields (``record``: CSV/JSONL columns)."""

    passed: bool
    reason: str
    best: ParityResult
    results: List[ParityResult]
    record: Dict[str, Any] = field(default_factory=dict)


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


def _note(passed: bool, best: ParityResult, other: Optional[ParityResult], eager: Optional[ParityResult],
          tol: Tolerance) -> str:
    pha = best.outputs["pha"]
    text = (f"{'pass' if passed else 'fail'} against eager {best.reference}: alpha max {pha.judged_max_abs:.3g}, "
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


def judge_outputs(outs: Sequence[np.ndarray], ref32: Sequence[np.ndarray], ref_same: Optional[Sequence[np.ndarray]],
                  tol: Tolerance, selection: Optional[Selection], precision: str = "fp32") -> Verdict:
    """Judge a candidate's six outputs (:data:`harness.parity.OUTPUT_NAMES` order, ``(B,C,H,W)``).

    ``ref32``: eager fp32 outputs on the same inputs; ``ref_same``: eager outputs in the cell's reduced
    precision (None for fp32 cells); ``tol``: the precision's :class:`~harness.config.Tolerance`.

    Raises:
        harness.parity.ShapeMismatch: output count or shapes differ from the reference's.
    """
    r32 = compare(outs, ref32, tol, "fp32", selection)
    results = [r32]
    eager = None
    if ref_same is not None:
        rs = compare(outs, ref_same, tol, precision, selection)
        results.append(rs)
        eager = compare(ref_same, ref32, tol, "fp32", selection)
        best = rs if (rs.passed or not r32.passed) else r32
    else:
        best = r32
    passed = best.passed
    other = next((r for r in results if r is not best), None)
    rec = _fields(best)
    if other is not None:
        rec[f"max_abs_pha_vs_{other.reference}"] = other.outputs["pha"].max_abs
        rec[f"judged_max_abs_pha_vs_{other.reference}"] = other.outputs["pha"].judged_max_abs
        rec[f"violation_frac_pha_vs_{other.reference}"] = other.outputs["pha"].judged_violation_frac
        rec[f"ref_iou_vs_{other.reference}"] = other.ref_iou
    if eager is not None:
        rec["eager_drift_max_abs_pha"] = eager.outputs["pha"].judged_max_abs
        rec["eager_drift_violation_frac_pha"] = eager.outputs["pha"].judged_violation_frac
    rec["parity_note"] = _note(passed, best, other, eager, tol)
    rec["parity"] = best.summary()
    reason = "" if passed else "; ".join(best.failures) + f" (vs eager {best.reference})"
    return Verdict(passed, reason, best, results, rec)
