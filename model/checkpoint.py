"""Reading checkpoints, whatever the model: what every model package's loader shares.

:func:`read_state_dict` reads a state_dict with ``torch.load(weights_only=True)`` (never unpickles code): a bare
one, one wrapped under ``"state_dict"``/``"model"``, keys prefixed ``module.`` (DataParallel) or ``model.``;
files that are not checkpoints (empty, a Git LFS pointer, text, a zip without ``data.pkl``, a directory,
pickled code) are refused with a message saying what they look like. :func:`sha256_of` names a file by its
bytes and :func:`nonfinite` finds weights that cannot produce a matte. What fits which model (keys, shapes,
the variant a state_dict looks like) stays in the model's own package (``model/<name>/checkpoint.py``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Dict, Iterable, Optional, Type, Union

import torch
from torch import Tensor

from .errors import CheckpointError

StateDict = Dict[str, Tensor]
_PREFIXES = ("module.", "model.")
_EXAMPLES = 5


def sha256_of(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file (read in 1 MiB chunks). Raises OSError for a file that cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def strip_prefixes(state_dict: Mapping) -> StateDict:
    """Remove a leading ``module.`` and/or ``model.`` shared by every key (repeatedly); other keys are kept."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in _PREFIXES:
            if all(isinstance(k, str) and k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def examples(items: list, n: int = _EXAMPLES) -> str:
    """The first ``n`` of ``items`` joined by commas, with ``... (N in all)`` when there are more."""
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _without_advice(exc: BaseException) -> str:
    """First line of ``exc`` without torch's suggestion to retry with ``weights_only=False`` (unsafe: it
    executes arbitrary code from the file)."""
    text = " ".join(str(exc).split())
    for marker in ("Re-running `torch.load`", "In PyTorch 2.6", "(1) In PyTorch", "(1) Re-running"):
        text = text.split(marker, 1)[0]
    text = text.replace("weights_only=False", "").strip(" .:;")
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _sniff(path: str, error: Type[CheckpointError]) -> None:
    """Say what a file that is not a torch checkpoint looks like, before torch tries to unpickle it.

    Raises:
        CheckpointError (``error``): empty file, a Git LFS pointer, a text file, or a zip archive without
            ``data.pkl``.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    size = os.path.getsize(path)
    if not head:
        raise error(f"checkpoint {path!r} is empty (0 bytes)")
    if head.startswith(b"version https://git-lfs"):
        raise error(f"checkpoint {path!r} is a Git LFS pointer ({size} bytes), not the weights: fetch the "
                    f"real file (git lfs pull) or download the .pth")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise error(f"checkpoint {path!r} is a zip archive without data.pkl, so not a torch.save file "
                        f"(it holds {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})")
        return
    if b"\0" not in head and head[:1] != b"\x80":
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return
        first = text.strip().splitlines()[0][:80] if text.strip() else ""
        raise error(f"checkpoint {path!r} is a text file ({size} bytes, first line {first!r}), not a torch checkpoint")


def read_state_dict(path: Union[str, os.PathLike], error: Type[CheckpointError] = CheckpointError) -> StateDict:
    """Read a state_dict from ``path`` with ``torch.load(weights_only=True)`` onto the CPU.

    Accepts a bare state_dict, a dict wrapping one under ``"state_dict"`` or ``"model"``, and keys prefixed
    ``module.``/``model.`` (removed). Never unpickles arbitrary objects. Does not check what model the weights
    are for: that is the model package's ``load_checkpoint``.

    Raises:
        CheckpointError (``error``, a model package passes its own subclass): a directory, a missing, empty,
            truncated or corrupt file, a Git LFS pointer, a text file, a zip without ``data.pkl``, pickled objects
            other than tensors (code), or something other than a non-empty mapping of names to tensors.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise error(f"checkpoint {path!r} is a directory; give the .pth file inside it")
    if not os.path.isfile(path):
        raise error(f"checkpoint not found: {path!r}")
    _sniff(path, error)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise error(
            f"refused to load {path!r}: it pickles objects other than tensors ({_without_advice(e)}); the harness "
            f"loads weights only and never runs code from a checkpoint: re-save it as a plain state_dict "
            f"(torch.save(model.state_dict(), path))"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many classes (RuntimeError, KeyError, EOFError, ...)
        raise error(f"cannot read checkpoint {path!r} (truncated or not a torch file?): "
                    f"{type(e).__name__}: {_without_advice(e)}") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise error(f"{path!r} does not hold a state_dict (a mapping of parameter names to tensors); "
                    f"got {type(obj).__name__}")
    return strip_prefixes(obj)


def nonfinite(state_dict: Mapping, keys: Optional[Iterable[str]] = None) -> Optional[str]:
    """Name the non-finite values of a state_dict's floating tensors (those of ``keys``, default all), e.g.
    ``"decoder.conv.weight holds 12 NaN values"``; None when every value is finite. Weights with NaN or Inf
    cannot produce a matte (every output pixel they reach becomes NaN)."""
    bad = []
    for k in (state_dict if keys is None else keys):
        v = state_dict.get(k)
        if not isinstance(v, Tensor) or not (v.is_floating_point() or v.is_complex()):
            continue
        finite = torch.isfinite(v)
        if bool(finite.all()):
            continue
        n_nan, n_inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
        what = " and ".join(f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_inf, "Inf")) if n)
        bad.append(f"{k} holds {what} value{'s' if n_nan + n_inf > 1 else ''}")
    if not bad:
        return None
    return (f"{examples(bad)}; expected finite weights (NaN/Inf weights cannot produce a matte: "
            f"re-export or re-train the checkpoint)")


__all__ = ["CheckpointError", "StateDict", "examples", "nonfinite", "read_state_dict", "sha256_of", "strip_prefixes"]
