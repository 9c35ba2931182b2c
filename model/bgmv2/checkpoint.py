"""Loading official BackgroundMattingV2 checkpoints (spec: bgmv2-model.md §3).

Official ``pytorch_<backbone>.pth`` files are plain ``MattingRefine`` state_dicts. Files saved from a
``DataParallel``/``DistributedDataParallel`` model carry a ``module.`` prefix and the official
TorchScript wrapper's keys carry ``model.``; both are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional, Union

from torch import Tensor, nn

from .. import checkpoint as _core
from ..checkpoint import StateDict, sha256_of, strip_prefixes  # noqa: F401 - re-exported
from .errors import CheckpointError  # noqa: F401 - re-exported

_examples = _core.examples
# key prefixes only BGMv2's ASPP and decoder have (RVM's are aspp.aspp1., decoder.decode0., ...)
_BGMV2_MARKERS = ("aspp.convs.", "aspp.project.", "decoder.conv", "decoder.bn")


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)`` onto the CPU
    (:func:`model.checkpoint.read_state_dict`: bare, wrapped under ``"state_dict"``/``"model"``, ``module.``/
    ``model.`` prefixes; never unpickles code).

    Raises:
        CheckpointError: the file is missing, a directory, empty, a Git LFS pointer, text, a zip without
            ``data.pkl``, truncated/corrupt, contains pickled code or objects that a weights-only load refuses,
            or holds something other than a mapping of tensors.
    """
    return _core.read_state_dict(path, error=CheckpointError)


def guess_backbone(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """``"mobilenetv2"``, ``"resnet50"`` or ``"resnet101"`` from a state_dict's keys; None for none of them,
    and for a state_dict without BGMv2's own ASPP/decoder keys (another model's, e.g. RVM's, whose backbones
    share torchvision's key names)."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if not any(k.startswith(_BGMV2_MARKERS) for k in keys):
        return None
    # by key prefixes, not single keys, so a checkpoint missing a few keys is still recognised
    if any(k.startswith("backbone.features.") for k in keys):
        return "mobilenetv2"
    if any(k.startswith("backbone.layer3.22.") for k in keys):
        return "resnet101"
    if any(k.startswith("backbone.layer") for k in keys):
        return "resnet50"
    return None


def guess_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Name the model a state_dict looks like, e.g. ``"MattingRefine(backbone='resnet50')"``.

    Returns None when it resembles none of the BMV2 models.
    """
    backbone = guess_backbone(state_dict)
    if backbone is None:
        return None
    cls = "MattingRefine" if any(k.startswith("refiner.") for k in state_dict) else "MattingBase"
    return f"{cls}(backbone={backbone!r})"



def load_checkpoint(
    model: nn.Module, source: Union[str, os.PathLike, Mapping[str, Tensor]], strict: bool = True
) -> nn.Module:
    """Load a checkpoint (path or state_dict) into ``model`` and return the model.

    With ``strict=True`` (the default, unlike the official export scripts' silent ``strict=False``)
    every key must be present with the right shape.

    Raises:
        CheckpointError: unreadable file (see :func:`read_state_dict`), or one message listing missing,
            unexpected and wrong-shape keys (a few examples each) and which model the file looks like, or
            one naming the tensors that hold NaN/Inf values (expected: finite weights).
    """
    sd = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else strip_prefixes(source)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} has shape {list(sd[k].shape)}, expected {list(own[k].shape)}"
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
    bad = _core.nonfinite(sd, [k for k in own if k in sd])
    if bad:
        raise CheckpointError(f"checkpoint does not fit {guess_architecture(own) or type(model).__name__}: {bad}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=strict)
    return model
