"""Shipped sample pairs and user-supplied images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness import inputs


@pytest.mark.parametrize("name", inputs.SAMPLE_NAMES)
@pytest.mark.parametrize("hw", [(288, 512), (1080, 1920), (256, 448)])
def test_samples_are_real_composites(name, hw):
    p = inputs.load_sample(name, hw)
    assert p.src.shape == (3, *hw) and p.bgr.shape == (3, *hw) and p.pha.shape == (1, *hw)
    # soft alpha: a real share of fractional values, and src differs from bgr where alpha > 0
    frac = float(((p.pha > 0.05) & (p.pha < 0.95)).float().mean())
    assert frac > 0.005
    fg = p.pha[0] > 0.5
    assert float((p.src - p.bgr).abs().mean(0)[fg].mean()) > 0.02
    assert float((p.src - p.bgr).abs().mean(0)[p.pha[0] < 0.01].mean()) < 0.03


def test_sources_are_documented():
    text = (inputs.SAMPLES_DIR / "SOURCES.md").read_text()
    for name in inputs.SAMPLE_NAMES:
        assert name in text
    assert "CC0" in text and "public domain" in text


def _save(path, arr, mode):
    Image.fromarray(arr, mode).save(path)


def test_user_pair_conversions_and_errors(tmp_path):
    rgb = (np.random.default_rng(0).random((66, 64, 3)) * 255).astype(np.uint8)
    _save(tmp_path / "s.png", rgb, "RGB")
    _save(tmp_path / "g.png", rgb[..., 0], "L")
    rgba = np.concatenate([rgb, np.full((66, 64, 1), 255, np.uint8)], axis=2)
    _save(tmp_path / "a.png", rgba, "RGBA")
    with pytest.raises(inputs.InputError, match="multiples of 4.*--pad"):
        inputs.load_user_pair(str(tmp_path / "s.png"), str(tmp_path / "g.png"))
    pair = inputs.load_user_pair(str(tmp_path / "a.png"), str(tmp_path / "g.png"), pad=True)
    assert pair.src.shape == pair.bgr.shape == (3, 66, 64)
    assert torch.allclose(pair.bgr[0], pair.bgr[1])  # grayscale became RGB
    padded, orig = inputs.pad_to_multiple(pair.src)
    assert padded.shape == (3, 68, 64) and orig == (66, 64)
    _save(tmp_path / "small.png", rgb[:64, :60], "RGB")
    with pytest.raises(inputs.InputError, match="same size"):
        inputs.load_user_pair(str(tmp_path / "s.png"), str(tmp_path / "small.png"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(inputs.InputError, match="not a readable image"):
        inputs.load_user_pair(str(tmp_path / "notes.png"), str(tmp_path / "s.png"))
    with pytest.raises(inputs.InputError, match="no such file"):
        inputs.load_user_pair(str(tmp_path / "missing.png"), str(tmp_path / "s.png"))
