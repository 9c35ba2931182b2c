"""The parity judge on real model outputs: mutants that must fail, near-misses that must pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.config import Tolerance
from harness.parity import Selection, ShapeMismatch, compare, near_ties, quarter_error
from harness.verdict import judge_outputs

from .conftest import make_model

TOL = Tolerance(atol=1e-3, rtol=0.0, max_violation_frac=0.0, tie_atol=1e-3)
TOL16 = Tolerance(atol=2e-2, rtol=0.0, max_violation_frac=1e-3, tie_atol=3e-2, eager_drift_factor=1.5)
SAMPLING = Selection("sampling", k=2000, threshold=0.1, prevent_oversampling=True)


def _outs(weights, pair, dtype=torch.float32, **kw):
    with torch.no_grad():
        m = make_model(weights, **kw).to(dtype)
        return [o.float().numpy() for o in m(pair[0].to(dtype), pair[1].to(dtype))]


@pytest.fixture(scope="module")
def sampling(weights, pair_b2):
    return _outs(weights, pair_b2)


def test_identical_outputs_pass(sampling):
    r = compare(sampling, sampling, TOL, selection=SAMPLING)
    assert r.passed and r.ref_iou == 1.0 and r.min_passing_atol == 0.0 and r.ref_counts == [2000, 2000]
    assert math.isinf(r.outputs["pha"].psnr)


def test_one_pixel_off_fails_and_reports_minimum_tolerance(sampling):
    bad = [x.copy() for x in sampling]
    bad[0][0, 0, 10, 10] += 0.05  # one alpha pixel off by 0.05
    r = compare(bad, sampling, TOL, selection=SAMPLING)
    assert not r.passed and "pha" in r.failures[0]
    assert abs(r.min_passing_atol - 0.05) < 1e-6
    assert r.outputs["pha"].violation_frac == 1 / sampling[0].size


@pytest.mark.parametrize("k_pixels", [30_000, 31_680])  # TopK keeping 1,875 or 1,980 of 2,000 cells
def test_a_smaller_topk_fails_although_every_judged_pixel_is_identical(weights, pair_b2, sampling, k_pixels):
    """Issue 9: with the old IoU gate, K = 1,875 passed fp16 (IoU 0.94) and K = 1,980 passed fp32."""
    mutant = _outs(weights, pair_b2, refine_sample_pixels=k_pixels)
    for tol in (TOL, TOL16):
        r = compare(mutant, sampling, tol, selection=SAMPLING)
        assert not r.passed
        assert any("per image" in f for f in r.failures), r.failures
        # fp32: most dropped cells are well above the K-th error (no tie); fp16's wider tie band holds
        # them all, and the per-image count alone catches the mutant
        if k_pixels == 30_000:
            assert (r.ref_nontie_disagreements > 0) == (tol is TOL)
    # without being told the mode, the judge infers K from the reference and still fails it
    assert not compare(mutant, sampling, TOL).passed


def test_a_nudged_threshold_fails_and_a_tie_swap_passes(weights, pair_b2):
    th = _outs(weights, pair_b2, refine_mode="thresholding")
    sel = Selection("thresholding", k=2000, threshold=0.1)
    nudged = _outs(weights, pair_b2, refine_mode="thresholding", refine_threshold=0.11)
    r = compare(nudged, th, TOL, selection=sel)
    assert not r.passed and r.ref_nontie_disagreements > 0
    # near-miss: flip the one cell whose error is closest to the threshold, as a backend whose error
    # differs by less than tie_atol there would; it must pass (its pixels are not judged)
    err_q = quarter_error(th[4], th[5].shape[2], th[5].shape[3])
    b, _, i, j = np.unravel_index(np.argmin(np.abs(err_q - 0.1)), err_q.shape)
    assert abs(err_q[b, 0, i, j] - 0.1) <= TOL.tie_atol
    flipped = [x.copy() for x in th]
    flipped[5][b, 0, i, j] = 1.0 - flipped[5][b, 0, i, j]
    flipped[0][b, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] += 0.3  # refined vs upsampled pixels differ a lot
    ok = compare(flipped, th, TOL, selection=sel)
    assert ok.passed and ok.ref_disagreements == 1 and ok.ref_nontie_disagreements == 0
    assert ok.outputs["pha"].max_abs >= 0.3 and ok.outputs["pha"].judged_max_abs == 0.0


def test_a_sampling_tie_swap_passes_but_a_far_swap_fails(sampling):
    """Swap the refined cell at the K-th error with the best unrefined one (a tie) -> pass; swap a
    cell far above the boundary -> fail."""
    ref = sampling
    err_q = quarter_error(ref[4], ref[5].shape[2], ref[5].shape[3])
    sel_map = ref[5] > 0.5
    ties = near_ties(err_q, SAMPLING, TOL.tie_atol)
    b = 0
    inside = np.argwhere(sel_map[b, 0] & ties[b, 0])
    outside = np.argwhere(~sel_map[b, 0] & ties[b, 0])
    assert len(inside) and len(outside), "the samples have near-ties at the K-th error"
    swapped = [x.copy() for x in ref]
    (i1, j1), (i2, j2) = inside[0], outside[0]
    swapped[5][b, 0, i1, j1], swapped[5][b, 0, i2, j2] = 0.0, 1.0
    assert compare(swapped, ref, TOL, selection=SAMPLING).passed
    far = np.argwhere(sel_map[b, 0] & ~ties[b, 0])
    top = far[np.argmax(err_q[b, 0][tuple(far.T)])]
    swapped[5][b, 0, top[0], top[1]], swapped[5][b, 0, i1, j1] = 0.0, 1.0
    r = compare(swapped, ref, TOL, selection=SAMPLING)
    assert not r.passed and r.ref_nontie_disagreements == 1  # the top cell dropped (the added one is a tie)


def test_nan_or_inf_anywhere_fails_even_in_the_reference(sampling):
    for out_idx in range(6):
        bad = [x.copy() for x in sampling]
        bad[out_idx][0, 0, 1, 1] = np.nan if out_idx % 2 else np.inf
        assert not compare(bad, sampling, TOL, selection=SAMPLING).passed, out_idx
        assert not compare(sampling, bad, TOL, selection=SAMPLING).passed, out_idx


def test_swapped_outputs_are_a_failure_not_a_crash(sampling):
    swapped = [sampling[1], sampling[0]] + sampling[2:]
    with pytest.raises(ShapeMismatch, match="'pha' has shape"):
        compare(swapped, sampling, TOL)
    with pytest.raises(ShapeMismatch, match="expected 6 outputs"):
        compare(sampling[:5], sampling, TOL)


def test_fp16_judge_catches_a_small_corruption_that_drift_allowance_hid(weights, pair_b2, sampling):
    """A graph that corrupts 0.5 % of alpha pixels by 0.25 must fail fp16, although eager fp16's own
    drift from fp32 is about that large; eager fp16 itself (the near-miss) passes."""
    e16 = _outs(weights, pair_b2, torch.float16)
    sel = SAMPLING
    ok = judge_outputs(e16, sampling, e16, TOL16, sel, "fp16")
    assert ok.passed and ok.best.reference == "fp16"
    assert ok.record["eager_drift_max_abs_pha"] > 0.02  # eager fp16 is far from fp32 itself
    rng = np.random.default_rng(0)
    bad = [x.copy() for x in e16]
    pha = bad[0]
    idx = rng.choice(pha.size, size=int(pha.size * 0.005), replace=False)
    flat = pha.reshape(-1)
    flat[idx] = np.where(flat[idx] > 0.5, flat[idx] - 0.25, flat[idx] + 0.25)
    v = judge_outputs(bad, sampling, e16, TOL16, sel, "fp16")
    assert not v.passed and "pha" in v.reason
    assert "eager fp16" in v.record["parity_note"]
