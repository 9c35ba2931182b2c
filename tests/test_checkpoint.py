"""Checkpoint loading: prefixes, mismatches, refusal of pickled code, truncated files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from model.bgmv2 import MattingRefine
from model.bgmv2.checkpoint import CheckpointError, guess_architecture, load_checkpoint, read_state_dict


def test_roundtrip_with_module_and_model_prefixes(weights, tmp_path):
    for prefix in ("", "module.", "model.", "module.model."):
        path = tmp_path / f"ckpt{len(prefix)}.pth"
        torch.save({prefix + k: v for k, v in weights.items()}, path)
        m = load_checkpoint(MattingRefine("mobilenetv2"), path)
        for k, v in m.state_dict().items():
            assert torch.equal(v, weights[k])


def test_wrapped_state_dict_is_accepted(weights, tmp_path):
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "w.pth")
    assert len(read_state_dict(tmp_path / "w.pth")) == 382


def test_wrong_backbone_names_keys_and_guess(tmp_path):
    torch.save(MattingRefine("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(MattingRefine("mobilenetv2"), tmp_path / "r50.pth")
    msg = str(e.value)
    assert "missing" in msg and "unexpected" in msg and "wrong shape" in msg
    assert "backbone.features.0.0.weight" in msg and "unexpected 318 keys: backbone.conv1.weight" in msg
    assert "looks like MattingRefine(backbone='resnet50')" in msg


def test_mattingbase_file_is_recognised(tmp_path):
    sd = {k: v for k, v in MattingRefine("mobilenetv2").state_dict().items() if not k.startswith("refiner.")}
    assert guess_architecture(sd) == "MattingBase(backbone='mobilenetv2')"
    with pytest.raises(CheckpointError, match=r"missing 20 keys: refiner\.conv1\.weight"):
        load_checkpoint(MattingRefine("mobilenetv2"), sd)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"backbone.x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)


def test_truncated_missing_and_non_state_dict_files(weights, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(weights, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(cut)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pth")
