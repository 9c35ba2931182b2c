"""Input/output contract of RobustVideoMatting: recurrent state shapes and input validation
(spec: rvm-model.md §1.4 state shapes, §1.7 value ranges, §3.1 official ONNX I/O contract).

:func:`state_shapes` is pure Python; torch is imported only by :func:`zero_states` and
:func:`validate_inputs`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

from .constants import NETWORK_STRIDE, STATE_CHANNELS, VARIANTS
from .errors import InputContractError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

#: How far outside [0, 1] src values (and outside [-1, 1] states) may lie before validation refuses them: a
#: bilinear resize or colour conversion of a [0, 1] image overshoots by a few 1e-3 at most.
RANGE_MARGIN = 0.01
STATE_NAMES = ("r1i", "r2i", "r3i", "r4i")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; expected one of {list(VARIANTS)}")


def src_sm_size(height: int, width: int, downsample_ratio: float) -> Tuple[int, int]:
    """Size ``(h, w)`` of ``src_sm``: ``(H, W)`` at ratio 1, else ``(floor(H r), floor(W r))`` (§1.7 step 1;
    the same double-precision product ``F.interpolate`` uses with ``recompute_scale_factor=False``)."""
    if downsample_ratio == 1:
        return int(height), int(width)
    return int(math.floor(height * float(downsample_ratio))), int(math.floor(width * float(downsample_ratio)))


def state_shapes(variant: str, height: int, width: int, downsample_ratio: float, batch: int = 1) -> List[List[int]]:
    """Shapes of r1..r4 for a ``height x width`` source at ``downsample_ratio`` (§1.4).

    r_k is ``[batch, c_k, ceil(h / 2^k), ceil(w / 2^k)]`` (iterated ceil-halving of ``src_sm``'s ``h, w``),
    with ``c_k`` = 16/20/40/64 (mobilenetv3) or 16/32/64/128 (resnet50). Example: mobilenetv3, 1080x1920,
    0.25 -> ``[[1, 16, 135, 240], [1, 20, 68, 120], [1, 40, 34, 60], [1, 64, 17, 30]]``.

    Raises:
        ValueError: unknown variant.
    """
    _check_variant(variant)
    h, w = src_sm_size(height, width, downsample_ratio)
    shapes = []
    for c in STATE_CHANNELS[variant]:
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append([int(batch), c, h, w])
    return shapes


def zero_states(variant: str, height: int, width: int, downsample_ratio: float, batch: int = 1,
                dtype: Optional["torch.dtype"] = None, device: Union[str, "torch.device"] = "cpu",
                broadcast: bool = False) -> List["Tensor"]:
    """Four zero states for the first frame: full-size (:func:`state_shapes`) or, with ``broadcast=True``,
    ``[1, 1, 1, 1]`` each (the official ONNX contract; only :class:`model.rvm.RecurrentExport` and exported
    graphs broadcast them; eager :class:`MattingNetwork` needs full-size states or None).

    ``dtype`` defaults to float32; use the model's dtype (float16 for a ``.half()`` model)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if broadcast:
        return [torch.zeros(1, 1, 1, 1, dtype=dtype, device=device) for _ in range(4)]
    return [torch.zeros(s, dtype=dtype, device=device)
            for s in state_shapes(variant, height, width, downsample_ratio, batch)]


def _dt(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _span(x: "Tensor") -> str:
    import torch

    lo, hi = torch.aminmax(x.detach().float())
    return f"[{lo.item():.4g}, {hi.item():.4g}]"


def _ratio_value(downsample_ratio) -> float:
    import torch

    if isinstance(downsample_ratio, torch.Tensor):
        if downsample_ratio.dtype != torch.float32:
            raise InputContractError(
                f"downsample_ratio is {_dt(downsample_ratio.dtype)}; expected a float32 tensor of shape [1] (it is "
                f"always float32, also for float16 models)")
        if list(downsample_ratio.shape) != [1]:
            raise InputContractError(
                f"downsample_ratio has shape {list(downsample_ratio.shape)}; expected a float32 tensor of shape [1]")
        return float(downsample_ratio.item())
    if isinstance(downsample_ratio, bool) or not isinstance(downsample_ratio, numbers.Real):
        raise InputContractError(
            f"downsample_ratio is a {type(downsample_ratio).__name__}; expected a float in (0, 1] (or a float32 "
            f"[1] tensor for a graph with a runtime ratio)")
    return float(downsample_ratio)


def validate_inputs(src: "Tensor", states: Sequence[Optional["Tensor"]], downsample_ratio,
                    dtype: Optional["torch.dtype"] = None, *, variant: str = "mobilenetv3",
                    broadcast_states: bool = True) -> None:
    """Check one call's inputs against the RVM contract before running a model or an exported graph.

    Args:
        src: RGB frames in [0, 1], ``(B, 3, H, W)`` (or ``(B, T, 3, H, W)`` for eager 5D chunks), floating
            point of the model's dtype.
        states: ``[r1i, r2i, r3i, r4i]``; each None (eager zeros), the full-size state of
            :func:`state_shapes` (batch B) or, if ``broadcast_states``, a ``[1, 1, 1, 1]`` zero tensor (the
            official ONNX first frame); model dtype; values in [-1, 1].
        downsample_ratio: a float, or a float32 tensor of shape [1] (the runtime-ratio ONNX input, always
            float32), with ``0 < r <= 1`` and ``floor(H r), floor(W r) >= 16`` (the network's stride).
        dtype: the model's parameter dtype; defaults to ``src.dtype``. float32 frames into a float16 model
            (or the reverse) are refused.
        variant: ``"mobilenetv3"`` or ``"resnet50"`` (state channel counts).
        broadcast_states: accept ``[1, 1, 1, 1]`` states (True for :class:`model.rvm.RecurrentExport` and
            onnx-branch-style graphs; False for eager :class:`model.rvm.MattingNetwork`).

    Raises:
        InputContractError: naming the offending input (``src``, ``r1i``..``r4i``, ``downsample_ratio``) and
            what would be accepted.
        ValueError: unknown ``variant``.
    """
    import torch

    _check_variant(variant)
    # --- src
    if not isinstance(src, torch.Tensor):
        raise InputContractError(f"src is a {type(src).__name__}; expected a float tensor [B, 3, H, W] in [0, 1]")
    shape = list(src.shape)
    if src.ndim not in (4, 5) or shape[-3] != 3:
        hint = ""
        if src.ndim in (3, 4, 5) and shape[-1] == 3:
            hint = ": this looks channels-last (HWC); permute to channels-first"
        elif src.ndim == 3 and shape[0] == 3:
            hint = ": add the batch dimension (src[None])"
        elif src.ndim in (4, 5) and shape[-3] in (1, 4):
            hint = ": convert grayscale/RGBA to RGB"
        raise InputContractError(f"src has shape {shape}; expected [B, 3, H, W] RGB (or [B, T, 3, H, W]){hint}")
    if not torch.is_floating_point(src):
        raise InputContractError(
            f"src is {_dt(src.dtype)}; expected float RGB in [0, 1] (e.g. src.float() / 255 for 8-bit images)")
    model_dtype = src.dtype if dtype is None else dtype
    if src.dtype != model_dtype:
        raise InputContractError(
            f"src is {_dt(src.dtype)} but the model is {_dt(model_dtype)}; convert the frames "
            f"(src.to({_dt(model_dtype)})) or the model")
    if src.numel() == 0:
        raise InputContractError(f"src is empty (shape {shape})")
    if not bool(torch.isfinite(src).all()):
        raise InputContractError("src contains NaN or Inf; expected finite RGB values in [0, 1]")
    lo, hi = (float(v) for v in torch.aminmax(src.detach().float()))
    if lo < -RANGE_MARGIN or hi > 1.0 + RANGE_MARGIN:
        if hi > 2.0 and lo >= -RANGE_MARGIN:
            hint = "this looks like 0-255 pixel values: divide by 255"
        elif lo < -RANGE_MARGIN and hi <= 1.0 + RANGE_MARGIN:
            hint = "this looks like [-1, 1] values: use (src + 1) / 2"
        else:
            hint = "undo any mean/std normalisation (the model normalises internally)"
        raise InputContractError(f"src values span {_span(src)}; expected RGB in [0, 1] (margin {RANGE_MARGIN}): "
                                 f"{hint}")
    height, width = shape[-2], shape[-1]
    # --- downsample_ratio
    r = _ratio_value(downsample_ratio)
    if not math.isfinite(r) or r <= 0 or r > 1:
        raise InputContractError(f"downsample_ratio={r!r}; expected 0 < downsample_ratio <= 1 (the guideline keeps "
                                 f"src_sm at 256-512 px: min(512 / max(H, W), 1))")
    h, w = src_sm_size(height, width, r)
    if min(h, w) < NETWORK_STRIDE:
        need = NETWORK_STRIDE / min(height, width)
        advice = (f"use downsample_ratio >= {need:.4g}" if need <= 1
                  else f"src itself is smaller than {NETWORK_STRIDE} px on a side: upscale or pad it")
        raise InputContractError(
            f"downsample_ratio={r!r} makes src_sm {h}x{w} from src {height}x{width}; each side must be at least "
            f"{NETWORK_STRIDE} px (the network's stride): {advice}")
    # --- states
    if isinstance(states, torch.Tensor) or len(states) != 4:
        got = "a tensor" if isinstance(states, torch.Tensor) else f"{len(states)} states"
        raise InputContractError(f"states: got {got}; expected the four recurrent states [r1i, r2i, r3i, r4i]")
    expected = state_shapes(variant, height, width, r, batch=shape[0])
    for name, state, exp in zip(STATE_NAMES, states, expected):
        if state is None:
            continue
        if not isinstance(state, torch.Tensor):
            raise InputContractError(f"{name} is a {type(state).__name__}; expected a tensor {exp} or None")
        got = list(state.shape)
        ok = got == exp or (broadcast_states and got == [1, 1, 1, 1])
        if not ok:
            alt = " or [1, 1, 1, 1]" if broadcast_states else " (or None for zeros)"
            hint = ""
            if not broadcast_states and got == [1, 1, 1, 1]:
                hint = ": the eager model does not broadcast states; pass None on the first frame"
            raise InputContractError(f"{name} has shape {got}; expected {exp}{alt}{hint}")
        if state.dtype != model_dtype:
            raise InputContractError(
                f"{name} is {_dt(state.dtype)} but the model is {_dt(model_dtype)}; states are in the model's dtype")
        if state.numel() and not bool(torch.isfinite(state).all()):
            raise InputContractError(f"{name} contains NaN or Inf; recurrent states are finite, in [-1, 1]")
        if state.numel():
            lo, hi = (float(v) for v in torch.aminmax(state.detach().float()))
            if lo < -1.0 - RANGE_MARGIN or hi > 1.0 + RANGE_MARGIN:
                raise InputContractError(
                    f"{name} values span {_span(state)}; recurrent states lie in [-1, 1]: feed back the previous "
                    f"call's {name[:-1]}o, or zeros on the first frame")


__all__ = ["RANGE_MARGIN", "STATE_NAMES", "src_sm_size", "state_shapes", "validate_inputs", "zero_states"]
