"""Shared fixtures: calibrated MobileNetV2 weights and real sample inputs (computed once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import inputs  # noqa: E402
from model.bgmv2 import MattingRefine  # noqa: E402
from model.bgmv2.calibration import calibrate  # noqa: E402

SMALL = (288, 512)


_OWN_CACHE: list[str] = []


def pytest_configure(config):
    """Every harness run in the tests uses one fresh cache (never the user's ~/.cache)."""
    import os
    import tempfile

    if "MATRIX_CACHE_DIR" not in os.environ:
        os.environ["MATRIX_CACHE_DIR"] = tempfile.mkdtemp(prefix="matrix-test-cache-")
        _OWN_CACHE.append(os.environ["MATRIX_CACHE_DIR"])


def pytest_unconfigure(config):
    """Delete the session's cache (about 200 MiB of artifacts), so test runs do not fill the disk."""
    import shutil

    for d in _OWN_CACHE:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def weights() -> dict:
    """State_dict of a seeded MobileNetV2 MattingRefine calibrated on the shipped samples."""
    torch.manual_seed(0)
    m = MattingRefine("mobilenetv2")
    _, src, bgr = inputs.batch_of(SMALL, 3)
    calibrate(m, [(src, bgr), (src.flip(-1), bgr.flip(-1))])
    return m.state_dict()


@pytest.fixture(scope="session")
def pair_b2():
    """Two different real sample pairs at 288x512: (src, bgr), each (2, 3, 288, 512)."""
    _, src, bgr = inputs.batch_of(SMALL, 2)
    return src, bgr


def make_model(weights: dict, **kw) -> MattingRefine:
    kw.setdefault("refine_sample_pixels", 32_000)
    m = MattingRefine("mobilenetv2", **kw)
    m.load_state_dict(weights)
    return m.eval()
