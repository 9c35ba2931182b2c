"""Loading official BackgroundMattingV2 checkpoints (spec: bgmv2-model.md §3).

Official ``pytorch_<backbone>.pth`` files are plain ``MattingRefine`` state_dicts. Files saved from a
``DataParallel``/``DistributedDataParallel`` model carry a ``module.`` prefix and the official
TorchScript wrapper's keys carry ``model.``; both are accepted.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Dict, Optional, Union

import torch
from torch import Tensor, nn

StateDict = Dict[str, Tensor]
_PREFIXES = ("module.", "model.")
_EXAMPLES = 5


from .errors import CheckpointError  # noqa: E402,F401 - re-exported


def sha256_of(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Remove a leading ``module.`` and/or ``model.`` shared by every key (repeatedly)."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)`` onto the CPU.

    Accepts a bare state_dict, a dict wrapping one under ``"state_dict"`` or ``"model"``, and keys
    prefixed ``module.``/``model.``. Never unpickles arbitrary objects.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, contains pickled code or objects that a
            weights-only load refuses, or holds something other than a mapping of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refused to load {path!r}: it is not a plain tensor state_dict (a weights_only=True load "
            f"rejected it: {first})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path!r} (truncated or not a torch file?): {first}") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path!r} does not hold a state_dict (a mapping of parameter names to tensors); got {type(obj).__name__}"
        )
    return strip_prefixes(obj)


def guess_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Name the model a state_dict looks like, e.g. ``"MattingRefine(backbone='resnet50')"``.

    Returns None when it resembles none of the BMV2 models.
    """
    keys = set(state_dict)
    if "backbone.features.0.0.weight" in keys:
        backbone = "mobilenetv2"
    elif "backbone.layer3.22.conv1.weight" in keys:
        backbone = "resnet101"
    elif "backbone.layer1.0.conv1.weight" in keys:
        backbone = "resnet50"
    else:
        return None
    cls = "MattingRefine" if any(k.startswith("refiner.") for k in keys) else "MattingBase"
    return f"{cls}(backbone={backbone!r})"


def _examples(items: list) -> str:
    shown = ", ".join(items[:_EXAMPLES])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _EXAMPLES else "")


def load_checkpoint(
    model: nn.Module, source: Union[str, os.PathLike, Mapping[str, Tensor]], strict: bool = True
) -> nn.Module:
    """Load a checkpoint (path or state_dict) into ``model`` and return the model.

    With ``strict=True`` (the default, unlike the official export scripts' silent ``strict=False``)
    every key must be present with the right shape.

    Raises:
        CheckpointError: unreadable file (see :func:`read_state_dict`), or one message listing missing,
            unexpected and wrong-shape keys (a few examples each) and which model the file looks like.
    """
    sd = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else strip_prefixes(source)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if wrong or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_examples(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_examples(unexpected)}")
        if wrong:
            parts.append(f"wrong shape for {len(wrong)} keys: {_examples(wrong)}")
        looks = guess_architecture(sd)
        expected = guess_architecture(own) or type(model).__name__
        raise CheckpointError(
            f"checkpoint does not match {expected}: " + "; ".join(parts)
            + f". The file looks like {looks or 'no BackgroundMattingV2 model'}."
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=strict)
    return model
