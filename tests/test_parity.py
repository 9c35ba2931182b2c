"""Parity metrics on real model outputs."""

from __future__ import annotations

import math

import numpy as np
import torch

from harness.config import Tolerance
from harness.parity import compare

from .conftest import make_model

TOL = Tolerance(atol=1e-3, rtol=0.0, max_violation_frac=0.0, min_ref_iou=0.99)


def _outs(weights, pair, **kw):
    with torch.no_grad():
        return [o.numpy() for o in make_model(weights, **kw)(*pair)]


def test_identical_outputs_pass(weights, pair_b2):
    o = _outs(weights, pair_b2)
    r = compare(o, o, TOL)
    assert r.passed and r.ref_iou == 1.0 and r.min_passing_atol == 0.0
    assert math.isinf(r.outputs["pha"].psnr)


def test_perturbation_fails_and_reports_minimum_tolerance(weights, pair_b2):
    o = _outs(weights, pair_b2)
    bad = [x.copy() for x in o]
    bad[0][0, 0, 10, 10] += 0.05  # one alpha pixel off by 0.05
    r = compare(bad, o, TOL)
    assert not r.passed and "pha" in r.failures[0]
    assert abs(r.min_passing_atol - 0.05) < 1e-6
    assert r.outputs["pha"].violation_frac == 1 / o[0].size


def test_changed_patch_selection_is_told_apart(weights, pair_b2):
    """A different sample budget refines other patches: ref IoU drops, judged pixels still agree."""
    a = _outs(weights, pair_b2, refine_sample_pixels=32_000)
    b = _outs(weights, pair_b2, refine_sample_pixels=24_000)
    r = compare(b, a, TOL)
    assert r.ref_iou < 0.99 and any("IoU" in f for f in r.failures)
    assert r.outputs["pha"].max_abs > 1e-2  # unmasked: large local differences
    assert r.outputs["pha"].judged_max_abs < 1e-5  # where both refined or both upsampled: identical
    nonfinite = [x.copy() for x in a]
    nonfinite[1][0, 0, 0, 0] = np.nan
    assert compare(nonfinite, a, TOL).outputs["fgr"].nonfinite == 1
