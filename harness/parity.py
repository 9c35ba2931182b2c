"""Matting-aware parity: compare a runtime's six outputs with an eager reference, so that no wrong graph
can pass.

The refiner picks quarter-resolution cells to refine (``ref_sm``). Two correct backends may pick a
different cell only where the choice is a *near-tie*: the cell's coarse error (``err_sm`` upsampled to
quarter resolution, the map the refiner selects on) is within ``tol.tie_atol`` of the selection
boundary — the K-th largest error of its image in sampling mode (K = ``sample_pixels // 16``), the
threshold in thresholding mode, and 0 where ``prevent_oversampling`` drops zero-error cells. Every
other disagreement (``ref_nontie_disagreements``) fails the cell, and in sampling mode the number of
refined cells per image must match exactly (apart from near-zero ties). A TopK that keeps 1,875
instead of 2,000 cells therefore fails, although the pixels of the cells both refined are identical.

``pha``/``fgr`` are judged on the pixels outside near-tie cells (``judged_*``); the unmasked numbers are
reported too. NaN or Inf anywhere, in the candidate or in the reference, is a violation (as Polygraphy
counts NaN as a mismatch). A candidate whose outputs have other shapes than the reference's fails with
the shapes named (e.g. ``pha`` and ``fgr`` swapped).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .values import Tolerance

# The output contract of patch-refinement matting that this judge reads, in order: alpha and foreground at full
# resolution, the coarse pass's alpha, foreground and error map, and the map of refined cells. A model adapter
# whose judge is this one declares these as its output_names (harness/models/<name>.py).
OUTPUT_NAMES = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")
IMAGE_OUTPUTS = ("pha", "fgr")
JUDGED_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm")


@dataclass(frozen=True)
class Selection:
    """How the refiner chose its cells: ``mode`` sampling | thresholding | full, ``k`` cells per image
    (sampling: ``refine_sample_pixels // 16``), ``threshold`` (thresholding), ``prevent_oversampling``."""

    mode: str
    k: int = 0
    threshold: float = 0.1
    prevent_oversampling: bool = True


@dataclass
class OutputStats:
    """Differences for one output. Abs values are in output units ([0, 1] images); psnr in dB."""

    max_abs: float
    mean_abs: float
    p99_abs: float
    violation_frac: float
    psnr: Optional[float]
    judged_max_abs: float  # outside near-tie cells (== max_abs for coarse outputs)
    judged_violation_frac: float
    nonfinite: int
    passed: bool


@dataclass
class ParityResult:
    """Per-output stats, the refined-cell agreement, the verdict and the smallest passing atol.

    ``ref_cells``/``ref_cells_ref``: refined cells in the candidate / the reference (all images);
    ``ref_disagreements``: cells refined by one only; ``ref_nontie_disagreements``: those not explained by
    a near-tie (must be 0); ``ref_counts``/``ref_counts_ref``: refined cells per image."""

    reference: str  # "fp32" or "fp16": which eager reference this was measured against
    outputs: Dict[str, OutputStats]
    ref_iou: float
    ref_cells: int
    ref_cells_ref: int
    passed: bool
    min_passing_atol: float
    failures: List[str] = field(default_factory=list)
    ref_disagreements: int = 0
    ref_nontie_disagreements: int = 0
    ref_counts: List[int] = field(default_factory=list)
    ref_counts_ref: List[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the report, e.g. ``pha max 1.6e-04 (judged 1.6e-04), ...; cells 2000/2000 ...``."""
        parts = [f"{k} max {v.max_abs:.1e}" + (f" (judged {v.judged_max_abs:.1e})" if v.judged_max_abs != v.max_abs else "")
                 for k, v in self.outputs.items()]
        return (", ".join(parts) + f"; refined cells {self.ref_cells}/{self.ref_cells_ref} (eager), "
                f"{self.ref_disagreements} differ, {self.ref_nontie_disagreements} not near-ties; "
                f"vs eager {self.reference}; passes at atol >= {self.min_passing_atol:.1e}")

    def as_dict(self) -> dict:
        return asdict(self)


class ShapeMismatch(ValueError):
    """The candidate's outputs do not have the reference's count or shapes (a wrong graph: ``fail``)."""


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


def quarter_error(err_sm: np.ndarray, hq: int, wq: int) -> np.ndarray:
    """``err_sm (B,1,Hc,Wc)`` resized to ``(B,1,hq,wq)`` exactly as the refiner does (bilinear,
    ``align_corners=False``, float32): the map whose values decide the refined cells."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(err_sm, dtype=np.float32))
        return F.interpolate(t, size=(hq, wq), mode="bilinear", align_corners=False).numpy()


def near_ties(err_q: np.ndarray, sel: Selection, tie_atol: float) -> np.ndarray:
    """Cells whose selection is a near-tie: ``(B,1,Hq,Wq)`` bool from the reference's quarter-res error.

    Sampling: within ``tie_atol`` of the K-th largest error of the image (or, with
    ``prevent_oversampling``, of 0); thresholding: within ``tie_atol`` of the threshold."""
    if sel.mode == "thresholding":
        return np.abs(err_q - sel.threshold) <= tie_atol
    flat = err_q.reshape(err_q.shape[0], -1)
    k = min(max(sel.k, 1), flat.shape[1])
    kth = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k]  # K-th largest per image
    ties = np.abs(err_q - kth.reshape(-1, 1, 1, 1)) <= tie_atol
    if sel.prevent_oversampling:
        ties |= err_q <= tie_atol
    return ties


def to_full_res(mask_q: np.ndarray) -> np.ndarray:
    """A quarter-resolution cell map ``(B,1,Hq,Wq)`` repeated over each cell's 4x4 pixels: ``(B,1,4Hq,4Wq)``."""
    return np.repeat(np.repeat(mask_q, 4, axis=2), 4, axis=3)


def _check_shapes(o: Dict[str, np.ndarray], r: Dict[str, np.ndarray], n_out: int, n_ref: int) -> None:
    if n_out != len(OUTPUT_NAMES) or n_ref != len(OUTPUT_NAMES):
        raise ShapeMismatch(f"expected {len(OUTPUT_NAMES)} outputs {list(OUTPUT_NAMES)}, got {n_out} "
                            f"(reference {n_ref})")
    for n in OUTPUT_NAMES:
        if o[n].shape != r[n].shape:
            raise ShapeMismatch(f"output {n!r} has shape {list(o[n].shape)}, reference {list(r[n].shape)}")


def compare(
    out: Sequence[np.ndarray], ref: Sequence[np.ndarray], tol: Tolerance, reference: str = "fp32",
    selection: Optional[Selection] = None, crop_to: Optional[Tuple[int, int]] = None,
) -> ParityResult:
    """Compare ``out`` with ``ref`` (each the six patch-refinement outputs in :data:`OUTPUT_NAMES` order).

    Arrays are ``(B, C, H, W)``; any float dtype (compared in float32). ``selection`` describes the
    refiner's cell choice (default: inferred as sampling with K = the reference's largest per-image
    count, which is exact whenever no zero-error cell was dropped); a pixel of ``pha``/``fgr`` violates
    when ``|out - ref| > atol + rtol*|ref|`` and an output passes when at most ``max_violation_frac``
    of its judged pixels violate. ``crop_to=(H, W)``: the input was zero-padded (``--pad``); ``pha``/``fgr``
    are judged on their top-left ``H x W`` only (the selection is judged on the whole padded map, as the
    model chose it).

    Raises:
        ShapeMismatch: wrong number of outputs or a shape mismatch (names the output and both shapes).
    """
    o = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, out)}
    r = {n: np.asarray(a, dtype=np.float32) for n, a in zip(OUTPUT_NAMES, ref)}
    _check_shapes(o, r, len(out), len(ref))
    failures = _nonfinite_failures(o, r, reference)
    sel_view = _judge_selection(o, r, tol, selection, failures)
    judged_full = to_full_res(~(sel_view["disagree"] & sel_view["ties"]))  # cells agreed on, or without excuse
    stats: Dict[str, OutputStats] = {}
    min_atol = 0.0
    for n in JUDGED_OUTPUTS:
        stats[n], need = _output_stats(n, o[n], r[n], tol, judged_full, crop_to, failures)
        min_atol = max(min_atol, need)
    ref_o, ref_r, disagree = sel_view["ref_o"], sel_view["ref_r"], sel_view["disagree"]
    return ParityResult(
        reference=reference,
        outputs=stats,
        ref_iou=iou(o["ref_sm"], r["ref_sm"]),
        ref_cells=int(ref_o.sum()),
        ref_cells_ref=int(ref_r.sum()),
        passed=not failures,
        min_passing_atol=min_atol,
        failures=failures,
        ref_disagreements=int(disagree.sum()),
        ref_nontie_disagreements=sel_view["n_nontie"],
        ref_counts=sel_view["counts_o"],
        ref_counts_ref=sel_view["counts_r"],
    )


def _nonfinite_failures(o: Dict[str, np.ndarray], r: Dict[str, np.ndarray], reference: str) -> List[str]:
    """NaN/Inf anywhere in either side is a violation (one failure line per output and side)."""
    failures: List[str] = []
    for n in OUTPUT_NAMES:
        bad_o, bad_r = int((~np.isfinite(o[n])).sum()), int((~np.isfinite(r[n])).sum())
        if bad_o:
            failures.append(f"{n}: {bad_o} non-finite values (NaN/Inf)")
        if bad_r:
            failures.append(f"{n}: the eager {reference} reference has {bad_r} non-finite values")
    return failures


def _judge_selection(o: Dict[str, np.ndarray], r: Dict[str, np.ndarray], tol: Tolerance,
                     selection: Optional[Selection], failures: List[str]) -> Dict[str, Any]:
    """Compare the refined-cell maps (``ref_sm``, ``(B,1,H/4,W/4)``): disagreements that are not near-ties, and
    (sampling) a different number of cells per image, are appended to ``failures``. Returns the maps, the
    disagreement and near-tie masks, per-image counts and the count of non-tie disagreements."""
    ref_o, ref_r = o["ref_sm"] > 0.5, r["ref_sm"] > 0.5
    disagree = ref_o != ref_r
    counts_o = [int(x) for x in ref_o.reshape(ref_o.shape[0], -1).sum(1)]
    counts_r = [int(x) for x in ref_r.reshape(ref_r.shape[0], -1).sum(1)]
    ties = np.zeros_like(disagree)
    zero_ties = np.zeros_like(disagree)  # near-zero cells that prevent_oversampling may drop on one side only
    sel = selection
    if sel is None:
        sel = Selection("full" if bool(ref_r.all()) else "sampling", k=max(counts_r) if counts_r else 0)
    if sel.mode != "full" and disagree.any():
        err_q = quarter_error(np.nan_to_num(r["err_sm"]), ref_r.shape[2], ref_r.shape[3])
        ties = near_ties(err_q, sel, tol.tie_atol)
        if sel.mode == "sampling" and sel.prevent_oversampling:
            zero_ties = disagree & (err_q <= tol.tie_atol)
    n_nontie = int((disagree & ~ties).sum())
    if n_nontie:
        failures.append(f"ref_sm: {n_nontie} refined cells differ from eager's where the choice is not a near-tie "
                        f"(error within {tol.tie_atol:g} of the {sel.mode} boundary); {int(disagree.sum())} differ in all")
    if sel.mode == "sampling":
        adj_o = [c - int(z) for c, z in zip(counts_o, (zero_ties & ref_o).reshape(len(counts_o), -1).sum(1))]
        adj_r = [c - int(z) for c, z in zip(counts_r, (zero_ties & ref_r).reshape(len(counts_r), -1).sum(1))]
        if adj_o != adj_r:
            extra = "" if (adj_o, adj_r) == (counts_o, counts_r) else f" (not counting near-zero-error cells: {adj_o} vs {adj_r})"
            failures.append(f"ref_sm: refined cells per image {counts_o}, eager's {counts_r}{extra}: sampling picks a "
                            f"fixed number per image")
    return {"ref_o": ref_o, "ref_r": ref_r, "disagree": disagree, "ties": ties, "counts_o": counts_o,
            "counts_r": counts_r, "n_nontie": n_nontie}


def _output_stats(n: str, a: np.ndarray, b: np.ndarray, tol: Tolerance, judged_full: np.ndarray,
                  crop_to: Optional[Tuple[int, int]], failures: List[str]) -> Tuple[OutputStats, float]:
    """Statistics of one output against its reference, judged outside near-tie patches (image outputs) and
    within ``crop_to``; appends a failure line when it does not pass. Returns the stats and the smallest
    atol that would pass it."""
    nonfinite = int((~np.isfinite(a)).sum())
    diff = np.abs(a - b)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    viol = diff > tol.atol + tol.rtol * np.abs(np.nan_to_num(b))
    if n in IMAGE_OUTPUTS:
        mask = np.broadcast_to(judged_full, a.shape)
        if crop_to is not None:
            h, w = crop_to
            diff, viol, mask = diff[..., :h, :w], viol[..., :h, :w], mask[..., :h, :w]
        judged, judged_viol = diff[mask], viol[mask]
    else:
        judged, judged_viol = diff.ravel(), viol.ravel()
    judged_max = float(judged.max()) if judged.size else 0.0
    judged_frac = float(judged_viol.mean()) if judged_viol.size else 0.0
    finite = diff[np.isfinite(diff)]
    ok = nonfinite == 0 and judged_frac <= tol.max_violation_frac
    if not ok and nonfinite == 0:
        failures.append(f"{n}: {judged_frac:.2%} of pixels beyond atol {tol.atol:g} + rtol {tol.rtol:g}*|ref| "
                        f"(max {judged_max:.3g}; at most {tol.max_violation_frac:.2%} allowed)")
    need = 0.0
    if judged.size:
        q = 1.0 - tol.max_violation_frac
        need = float(np.quantile(judged, q)) if q < 1.0 else judged_max
    stats = OutputStats(
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
    return stats, need
