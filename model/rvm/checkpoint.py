"""Loading RobustVideoMatting checkpoints (spec: rvm-model.md §1.1, §2).

The released ``rvm_mobilenetv3.pth`` / ``rvm_resnet50.pth`` are plain state_dicts of the
``deep_guided_filter`` models. A ``fast_guided_filter`` model has no ``refiner.*`` parameters and loads the
same file minus those keys (what the official export scripts' ``strict=False`` achieves, but here every
other key is still checked).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Union

from torch import nn

from .. import checkpoint as _core
from ..checkpoint import StateDict, strip_prefixes  # noqa: F401 - re-exported
from .errors import CheckpointError

_examples = _core.examples
# key prefixes only RVM's LR-ASPP, recurrent decoder and projections have (BGMv2's are aspp.convs., decoder.conv1., ...)
_RVM_MARKERS = ("aspp.aspp1.", "aspp.aspp2.", "decoder.decode", "project_mat.", "project_seg.")


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a state_dict with ``torch.load(weights_only=True)`` onto the CPU, never unpickling code
    (:func:`model.checkpoint.read_state_dict`).

    Accepts a bare state_dict or one wrapped under ``"state_dict"``/``"model"``, with ``module.``/``model.``
    prefixes.

    Raises:
        CheckpointError: missing file or a directory, an empty, text, Git LFS pointer, zip-without-data.pkl,
            unreadable or corrupt file, pickled objects other than tensors, or something that is not a mapping
            of names to tensors.
    """
    return _core.read_state_dict(path, error=CheckpointError)


def guess_variant(state_dict: Mapping) -> Union[str, None]:
    """``"mobilenetv3"`` or ``"resnet50"`` from a state_dict's keys; None if it looks like neither, or has none
    of RVM's own LR-ASPP/decoder/projection keys (another model's, e.g. BGMv2's, whose backbones share
    torchvision's key names)."""
    if not any(isinstance(k, str) and k.startswith(_RVM_MARKERS) for k in state_dict):
        return None
    if "backbone.features.16.0.weight" in state_dict:
        return "mobilenetv3"
    if "backbone.layer4.0.conv1.weight" in state_dict:
        return "resnet50"
    return None



def load_checkpoint(model: nn.Module, state_dict_or_path: Union[str, os.PathLike, Mapping]) -> nn.Module:
    """Load a checkpoint (path or state_dict) into a :class:`model.rvm.MattingNetwork`; returns the model.

    Strict for every key the model has, with two tolerances: a model without ``refiner.*`` parameters (the
    ``fast_guided_filter`` refiner) drops the checkpoint's ``refiner.*`` keys, and BatchNorm
    ``num_batches_tracked`` counters absent from the checkpoint are filled in (as torch's loader does).
    Tensors are cast to the model's parameter dtypes by ``load_state_dict``.

    Raises:
        CheckpointError: unreadable file (see :func:`read_state_dict`), or one message naming the missing,
            unexpected and mis-shaped keys (a few of each, with counts) and which variant the checkpoint looks
            like, or one naming the tensors that hold NaN/Inf values (expected: finite weights).
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        sd = read_state_dict(state_dict_or_path)
    elif isinstance(state_dict_or_path, Mapping):
        sd = strip_prefixes(state_dict_or_path)
    else:
        raise CheckpointError(f"expected a path or a state_dict, got {type(state_dict_or_path).__name__}")
    own = model.state_dict()
    if not any(k.startswith("refiner.") for k in own):
        sd = {k: v for k, v in sd.items() if not k.startswith("refiner.")}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(own[k].shape)})"
             for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"mis-shaped {len(wrong)} keys: {_examples(wrong)}")
        if missing:
            parts.append(f"missing {len(missing)} keys: {_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_examples(unexpected)}")
        mine = getattr(model, "variant", None) or guess_variant(own) or type(model).__name__
        theirs = guess_variant(sd)
        raise CheckpointError(f"checkpoint does not match the {mine} model: " + "; ".join(parts)
                              + f". The checkpoint looks like {theirs or 'no RVM variant'}.")
    bad = _core.nonfinite(sd, [k for k in own if k in sd])
    if bad:
        mine = getattr(model, "variant", None) or guess_variant(own) or type(model).__name__
        raise CheckpointError(f"checkpoint does not fit the {mine} model: {bad}")
    result = model.load_state_dict(sd, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # pragma: no cover - the checks above make this unreachable
        raise CheckpointError(f"load_state_dict left missing {leftover} / unexpected {result.unexpected_keys}")
    return model


__all__ = ["CheckpointError", "guess_variant", "load_checkpoint", "read_state_dict", "strip_prefixes"]
