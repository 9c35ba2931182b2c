"""Matting-aware parity: compare a runtime's six outputs with an eager reference.

Patch-selection changes (TopK ties, ``err > 0`` in fp16) move whole 4x4 patches between "refined" and
"upsampled", producing large *local* differences that say nothing about whether the graph is right.
So ``ref_sm`` agreement is reported separately (IoU of the refined cells) and ``pha``/``fgr`` are judged
on the pixels whose refinement decision agrees in both; the unmasked numbers are reported as well.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .config import Tolerance
from .exporters import OUTPUT_NAMES

IMAGE_OUTPUTS = ("pha", "fgr")
JUDGED_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm")


@dataclass
class OutputStats:
    """Differences for one output. Abs values are in output units ([0, 1] images); psnr in dB."""

    max_abs: float
    mean_abs: float
    p99_abs: float
    violation_frac: float
    psnr: Optional[float]
    judged_max_abs: float  # on pixels whose refinement decision agrees (== max_abs for coarse outputs)
    judged_violation_frac: float
    nonfinite: int
    passed: bool


@dataclass
class ParityResult:
    """Per-output stats, ``ref_iou`` of the refined-cell maps, verdict and the smallest passing atol."""

    reference: str  # "fp32" or "fp16": which eager reference this was measured against
    outputs: Dict[str, OutputStats]
    ref_iou: float
    ref_cells: int
    ref_cells_ref: int
    passed: bool
    min_passing_atol: float
    failures: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the report, e.g. ``pha max 1.6e-04 (judged 1.6e-04) ... ref IoU 1.000``."""
        parts = [f"{k} max {v.max_abs:.1e}" for k, v in self.outputs.items()]
        return ", ".join(parts) + f"; ref IoU {self.ref_iou:.4f}; passes at atol >= {self.min_passing_atol:.1e}"

    def as_dict(self) -> dict:
        return asdict(self)


def _psnr(diff: np.ndarray) -> Optional[float]:
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two {0,1} maps (> 0.5 counts as selected); 1.0 when both are empty."""
    a, b = a > 0.5, b > 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(
    out: Sequence[np.ndarray], ref: Sequence[np.ndarray], tol: Tolerance, reference: str = "fp32"
) -> ParityResult:
    """Compare ``out`` with ``ref`` (each the six BMV2 outputs in :data:`OUTPUT_NAMES` order).

    Arrays are ``(B, C, H, W)``; any float dtype (compared in float32). Shapes must match.

    Raises:
        ValueError: wrong number of outputs or a shape mismatch (names the output and both shapes).
    """
    if len(out) != len(OUTPUT_NAMES) or len(ref) != len(OUTPUT_NAMES):
        raise ValueError(f"expected {len(OUTPUT_NAMES)} outputs {OUTPUT_NAMES}, got {len(out)} and {len(ref)}")
    o = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, out)}
    r = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, ref)}
    for n in OUTPUT_NAMES:
        if o[n].shape != r[n].shape:
            raise ValueError(f"output {n!r} has shape {list(o[n].shape)}, reference {list(r[n].shape)}")
    ref_o, ref_r = o["ref_sm"] > 0.5, r["ref_sm"] > 0.5
    agree_q = ref_o == ref_r  # (B,1,H/4,W/4)
    agree = np.repeat(np.repeat(agree_q, 4, axis=2), 4, axis=3)  # full-res (B,1,H,W)
    stats: Dict[str, OutputStats] = {}
    failures: List[str] = []
    min_atol = 0.0
    for n in JUDGED_OUTPUTS:
        a, b = o[n], r[n]
        nonfinite = int((~np.isfinite(a)).sum())
        diff = np.abs(np.where(np.isfinite(a), a, np.inf) - b)
        limit = tol.atol + tol.rtol * np.abs(b)
        viol = diff > limit
        if n in IMAGE_OUTPUTS:
            mask = np.broadcast_to(agree, a.shape)
            judged = diff[mask]
            judged_viol = viol[mask]
        else:
            judged, judged_viol = diff.ravel(), viol.ravel()
        judged_max = float(judged.max()) if judged.size else 0.0
        judged_frac = float(judged_viol.mean()) if judged_viol.size else 0.0
        finite = diff[np.isfinite(diff)]
        ok = nonfinite == 0 and judged_frac <= tol.max_violation_frac
        if not ok:
            failures.append(
                f"{n}: {judged_frac:.2%} of pixels beyond atol {tol.atol:g} + rtol {tol.rtol:g}*|ref| "
                f"(max {judged_max:.3g})" + (f", {nonfinite} non-finite" if nonfinite else "")
            )
        if judged.size:
            q = 1.0 - tol.max_violation_frac
            min_atol = max(min_atol, float(np.quantile(judged, q)) if q < 1.0 else judged_max)
        stats[n] = OutputStats(
            max_abs=float(diff.max()) if diff.size else 0.0,
            mean_abs=float(finite.mean()) if finite.size else math.nan,
            p99_abs=float(np.quantile(finite, 0.99)) if finite.size else math.nan,
            violation_frac=float(viol.mean()),
            psnr=_psnr(np.where(np.isfinite(diff), diff, 1.0)) if n in IMAGE_OUTPUTS else None,
            judged_max_abs=judged_max,
            judged_violation_frac=judged_frac,
            nonfinite=nonfinite,
            passed=ok,
        )
    ref_iou = iou(o["ref_sm"], r["ref_sm"])
    if ref_iou < tol.min_ref_iou:
        failures.append(f"ref_sm: IoU {ref_iou:.4f} < {tol.min_ref_iou} (different patches refined)")
    return ParityResult(
        reference=reference,
        outputs=stats,
        ref_iou=ref_iou,
        ref_cells=int(ref_o.sum()),
        ref_cells_ref=int(ref_r.sum()),
        passed=not failures,
        min_passing_atol=min_atol,
        failures=failures,
    )


def drift_failures(cell: ParityResult, eager: ParityResult, tol: Tolerance, factor: float) -> List[str]:
    """Judge a reduced-precision cell by the drift eager PyTorch itself shows in that precision.

    ``cell`` and ``eager`` are both compared against the fp32 eager reference. The cell passes when,
    for every judged output, its violating fraction and max abs error are at most ``factor`` times
    eager's (or within ``tol`` outright), it has no non-finite values and its ``ref_sm`` IoU meets
    ``tol.min_ref_iou``. This separates "fp16 is lossy for this model" from "the export is wrong"
    (Polygraphy's reduced-precision guidance; anchors.md feature 3). Returns the failures (empty = pass).
    """
    failures: List[str] = []
    for n in JUDGED_OUTPUTS:
        c, e = cell.outputs[n], eager.outputs[n]
        frac_lim = max(tol.max_violation_frac, e.judged_violation_frac * factor)
        max_lim = max(tol.atol, e.judged_max_abs * factor)
        if c.nonfinite:
            failures.append(f"{n}: {c.nonfinite} non-finite values")
        elif c.judged_violation_frac > frac_lim or c.judged_max_abs > max_lim:
            failures.append(
                f"{n}: drift from fp32 (max {c.judged_max_abs:.3g}, {c.judged_violation_frac:.2%} beyond atol) exceeds "
                f"{factor:g}x eager's own (max {e.judged_max_abs:.3g}, {e.judged_violation_frac:.2%})"
            )
    if cell.ref_iou < tol.min_ref_iou:
        failures.append(f"ref_sm: IoU {cell.ref_iou:.4f} < {tol.min_ref_iou} (different patches refined)")
    return failures
