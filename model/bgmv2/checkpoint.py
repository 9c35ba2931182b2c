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


def _without_advice(exc: BaseException) -> str:
    """First line of ``exc`` without torch's suggestion to retry with ``weights_only=False`` (unsafe: it
    executes arbitrary code from the file)."""
    text = " ".join(str(exc).split())
    for marker in ("Re-running `torch.load`", "In PyTorch 2.6", "(1) In PyTorch", "(1) Re-running"):
        text = text.split(marker, 1)[0]
    text = text.replace("weights_only=False", "").strip(" .:;")
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _sniff(path: str) -> None:
    """Say what a file that is not a torch checkpoint looks like, before torch tries to unpickle it.

    Raises:
        CheckpointError: empty file, a Git LFS pointer, a text file, or a zip archive without ``data.pkl``.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    size = os.path.getsize(path)
    if not head:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes)")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"checkpoint {path!r} is a Git LFS pointer ({size} bytes), not the weights: fetch the "
                              f"real file (git lfs pull) or download the .pth")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(f"checkpoint {path!r} is a zip archive without data.pkl, so not a torch.save file "
                                  f"(it holds {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})")
        return
    if b"\0" not in head and head[:1] != b"\x80":
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return
        first = text.strip().splitlines()[0][:80] if text.strip() else ""
        raise CheckpointError(f"checkpoint {path!r} is a text file ({size} bytes, first line {first!r}), "
                              f"not a torch checkpoint")


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)`` onto the CPU.

    Accepts a bare state_dict, a dict wrapping one under ``"state_dict"`` or ``"model"``, and keys
    prefixed ``module.``/``model.``. Never unpickles arbitrary objects.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, contains pickled code or objects that a
            weights-only load refuses, or holds something other than a mapping of tensors.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory; give the .pth file inside it")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    _sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path!r}: it pickles objects other than tensors ({_without_advice(e)}); the harness "
            f"loads weights only and never runs code from a checkpoint: re-save it as a plain state_dict "
            f"(torch.save(model.state_dict(), path))"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many classes (RuntimeError, KeyError, EOFError, ...)
        raise CheckpointError(f"cannot read checkpoint {path!r} (truncated or not a torch file?): "
                              f"{type(e).__name__}: {_without_advice(e)}") from None
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


def guess_backbone(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """``"mobilenetv2"``, ``"resnet50"`` or ``"resnet101"`` from a state_dict's keys; None for none of them."""
    keys = set(state_dict)
    if "backbone.features.0.0.weight" in keys:
        return "mobilenetv2"
    if "backbone.layer3.22.conv1.weight" in keys:
        return "resnet101"
    if "backbone.layer1.0.conv1.weight" in keys:
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
