"""Loading RobustVideoMatting checkpoints (spec: rvm-model.md §1.1, §2).

The released ``rvm_mobilenetv3.pth`` / ``rvm_resnet50.pth`` are plain state_dicts of the
``deep_guided_filter`` models. A ``fast_guided_filter`` model has no ``refiner.*`` parameters and loads the
same file minus those keys (what the official export scripts' ``strict=False`` achieves, but here every
other key is still checked).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Dict, Union

import torch
from torch import Tensor, nn

from .errors import CheckpointError

StateDict = Dict[str, Tensor]
_PREFIXES = ("module.", "model.")
_EXAMPLES = 5


def strip_prefixes(state_dict: Mapping) -> StateDict:
    """Remove a ``module.`` (DataParallel) or ``model.`` prefix shared by every key, repeatedly."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in _PREFIXES:
            if all(isinstance(k, str) and k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a state_dict with ``torch.load(weights_only=True)`` onto the CPU (never unpickles code).

    Accepts a bare state_dict or one wrapped under ``"state_dict"``/``"model"``, with ``module.``/``model.``
    prefixes.

    Raises:
        CheckpointError: missing file, unreadable/corrupt file, pickled objects other than tensors, or
            something that is not a mapping of names to tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found (or not a file): {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"refused to load {path!r}: it pickles objects other than tensors ({first}); re-save "
                              f"it as a plain state_dict") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many classes
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path!r} (truncated or not a torch file?): "
                              f"{type(e).__name__}: {first}") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path!r} does not hold a state_dict (a mapping of names to tensors); got "
                              f"{type(obj).__name__}")
    return strip_prefixes(obj)


def guess_variant(state_dict: Mapping) -> Union[str, None]:
    """``"mobilenetv3"`` or ``"resnet50"`` from a state_dict's keys; None if it looks like neither."""
    if "backbone.features.16.0.weight" in state_dict:
        return "mobilenetv3"
    if "backbone.layer4.0.conv1.weight" in state_dict:
        return "resnet50"
    return None


def _examples(items: list) -> str:
    shown = ", ".join(items[:_EXAMPLES])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _EXAMPLES else "")


def load_checkpoint(model: nn.Module, state_dict_or_path: Union[str, os.PathLike, Mapping]) -> nn.Module:
    """Load a checkpoint (path or state_dict) into a :class:`model.rvm.MattingNetwork`; returns the model.

    Strict for every key the model has, with two tolerances: a model without ``refiner.*`` parameters (the
    ``fast_guided_filter`` refiner) drops the checkpoint's ``refiner.*`` keys, and BatchNorm
    ``num_batches_tracked`` counters absent from the checkpoint are filled in (as torch's loader does).
    Tensors are cast to the model's parameter dtypes by ``load_state_dict``.

    Raises:
        CheckpointError: unreadable file (see :func:`read_state_dict`), or one message naming the missing,
            unexpected and mis-shaped keys (a few of each, with counts) and which variant the checkpoint looks
            like.
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
    wrong = [f"{k} {list(sd[k].shape)} (model expects {list(own[k].shape)})"
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
    result = model.load_state_dict(sd, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # pragma: no cover - the checks above make this unreachable
        raise CheckpointError(f"load_state_dict left missing {leftover} / unexpected {result.unexpected_keys}")
    return model


__all__ = ["CheckpointError", "guess_variant", "load_checkpoint", "read_state_dict", "strip_prefixes"]
