"""Export-time behaviour of RobustVideoMatting, without changing :class:`MattingNetwork`'s master semantics.

Two export I/O contracts (spec: rvm-model.md §3.1, §4):

- **official onnx branch** (``RecurrentExport(model, None)``): inputs ``src, r1i..r4i, downsample_ratio``
  where ``downsample_ratio`` is a float32 ``[1]`` runtime input feeding an ONNX ``Resize`` through
  :class:`ResizeByFactor` (legacy TorchScript-based exporter, opset >= 11);
- **TensorRT recipe** (``RecurrentExport(model, 0.25)``): the ratio is baked in as a constant and there is
  no ``downsample_ratio`` input; pair it with :func:`dynamic_axes` ``(distinct=True)``.

In both, the states are broadcast to their GRU inputs' shapes (``h.expand_as(x)``), so ``[1, 1, 1, 1]`` zero
states work on the first frame, and the refiner **always** runs, also at ratio 1 (eager master skips it at
ratio 1, so outputs differ there by design, §5 A).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputContractError
from .matting import MattingNetwork, resize_by_factor

#: Output names of both export contracts.
OUTPUT_NAMES = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
STATE_INPUT_NAMES = ("r1i", "r2i", "r3i", "r4i")


class ResizeByFactor(torch.autograd.Function):
    """Bilinear resize of ``x`` by a runtime factor held in a float32 ``[1]`` tensor (the onnx branch's
    "resize-by-factor" op, §3.1).

    Eager ``forward(x, scale)``: ``F.interpolate(x, scale_factor=scale.item(), mode="bilinear",
    align_corners=False, recompute_scale_factor=False)``; ``x`` 4D ``(N, C, H, W)`` float32/float16 ->
    ``(N, C, floor(H r), floor(W r))``.

    Legacy ONNX export (``torch.onnx.export(..., dynamo=False)``, opset >= 11): one ``Resize`` with inputs
    ``(x, roi = empty float32 constant, scales = Concat([1, 1], r, r))`` and ``mode='linear'``,
    ``coordinate_transformation_mode='pytorch_half_pixel'``, ``cubic_coeff_a=-0.75``, ``nearest_mode='floor'``.
    The scales stay float32 for float16 models (``r`` is cast to float32 if it is not already). The dynamo
    exporter ignores ``symbolic`` and fails on ``.item()`` (§5 C.1): use a baked ratio there.

    Inference only (no backward).
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        return F.interpolate(x, scale_factor=float(scale.item()), mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)

    @staticmethod
    def symbolic(g, x, scale):  # noqa: D102 - documented on the class
        opset = getattr(g, "opset", None)
        if opset is not None and opset < 11:
            raise ValueError(f"a runtime downsample_ratio needs ONNX opset >= 11 (Resize with a scales input); "
                             f"got opset {opset}: use opset 11+ or bake the ratio (RecurrentExport(model, 0.25))")
        try:
            is_float = scale.type().scalarType() == "Float"
        except (AttributeError, RuntimeError):
            is_float = False
        if not is_float:
            scale = g.op("Cast", scale, to_i=1)  # TensorProto.FLOAT
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        ones = g.op("Constant", value_t=torch.tensor([1.0, 1.0], dtype=torch.float32))
        scales = g.op("Concat", ones, scale, scale, axis_i=0)
        return g.op("Resize", x, roi, scales, mode_s="linear", coordinate_transformation_mode_s="pytorch_half_pixel",
                    cubic_coeff_a_f=-0.75, nearest_mode_s="floor")


class RecurrentExport(nn.Module):
    """Export wrapper with the onnx-branch / TensorRT-recipe behaviour around a :class:`MattingNetwork`.

    Args:
        model: the network (its weights, dtype and train/eval state are used as they are).
        downsample_ratio: a float in (0, 1] baked in as a constant (TensorRT recipe; ``forward`` takes 5
            inputs), or None for a runtime float32 ``[1]`` input (official onnx branch; 6 inputs).

    Raises:
        ValueError: ``downsample_ratio`` outside (0, 1].

    ``forward(src, r1i, r2i, r3i, r4i[, downsample_ratio])``:
        src: ``(B, 3, H, W)`` RGB in [0, 1] in the model dtype (4D only).
        r1i..r4i: states in the model dtype, full-size (:func:`model.rvm.state_shapes`) or ``[1, 1, 1, 1]``
            zeros on the first frame (broadcast with ``expand_as``; identical results to full-size zeros).
        downsample_ratio: only for ``RecurrentExport(model, None)``: float32 tensor of shape ``[1]``, always
            float32 (also for float16 models).

    Returns the tuple ``(fgr, pha, r1o, r2o, r3o, r4o)``: ``fgr`` ``(B, 3, H, W)`` and ``pha``
    ``(B, 1, H, W)`` in [0, 1], states full-size. The refiner always runs. At ratios != 1 this equals
    ``model(src, *states, downsample_ratio=r)`` with full-size states.

    The wrapper starts with the inner model's ``training`` flag (it never flips the model's train/eval
    state itself), but the legacy exporter restores the *wrapper's* flag recursively after export: callers
    should call ``.eval()`` on the wrapper (which puts the model in eval too) before exporting (§5 B).
    """

    def __init__(self, model: MattingNetwork, downsample_ratio: Optional[float]) -> None:
        super().__init__()
        if downsample_ratio is not None:
            downsample_ratio = float(downsample_ratio)
            if not 0.0 < downsample_ratio <= 1.0:
                raise ValueError(f"downsample_ratio={downsample_ratio!r}; expected 0 < r <= 1, or None for a "
                                 f"runtime input")
        self.model = model
        self.runtime_ratio = downsample_ratio is None
        self.downsample_ratio = 1.0 if downsample_ratio is None else downsample_ratio
        self.training = model.training  # a non-recursive copy: nothing inside the model changes

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor,  # noqa: D102
                downsample_ratio: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if src.ndim != 4:
            raise InputContractError(f"src has shape {list(src.shape)}; the export wrapper takes 4D [B, 3, H, W]")
        if self.runtime_ratio:
            if downsample_ratio is None:
                raise InputContractError("downsample_ratio is missing; this wrapper (RecurrentExport(model, None)) "
                                         "takes it as a float32 tensor of shape [1]")
            src_sm = ResizeByFactor.apply(src, downsample_ratio)
        else:
            if downsample_ratio is not None:
                raise InputContractError(f"downsample_ratio is baked into this wrapper ({self.downsample_ratio}); "
                                         f"do not pass it, or build RecurrentExport(model, None)")
            src_sm = src if self.downsample_ratio == 1.0 else resize_by_factor(src, self.downsample_ratio)
        out = self.model.run(src, src_sm, r1i, r2i, r3i, r4i, True, True, False)
        return tuple(out)


class MattingNetworkExport(MattingNetwork):
    """:class:`RecurrentExport`'s behaviour as a :class:`MattingNetwork` subclass: the same state_dict keys
    (no ``model.`` prefix), so the harness loads a checkpoint into it directly and exports it as is.

    Args:
        variant, refiner: as :class:`MattingNetwork`.
        downsample_ratio: the baked ratio in (0, 1) (used when ``ratio_input`` is False).
        ratio_input: True: ``forward`` takes ``downsample_ratio`` as a float32 ``[1]`` tensor (official onnx
            branch); False: the ratio is a constant of the graph (TensorRT recipe).

    ``forward(src, r1i, r2i, r3i, r4i[, downsample_ratio])`` as :class:`RecurrentExport` (4D ``src``, states
    broadcast, refiner always on) -> ``(fgr, pha, r1o, r2o, r3o, r4o)``. Master's forward stays reachable as
    ``MattingNetwork.forward(module, ...)`` (the harness's eager reference).
    """

    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter",
                 downsample_ratio: float = 0.25, ratio_input: bool = True) -> None:
        super().__init__(variant, refiner)
        if not 0.0 < float(downsample_ratio) <= 1.0:
            raise ValueError(f"downsample_ratio={downsample_ratio!r}; expected 0 < r <= 1")
        self.baked_ratio = float(downsample_ratio)
        self.ratio_input = bool(ratio_input)

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor,  # type: ignore[override]
                downsample_ratio: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        if src.ndim != 4:
            raise InputContractError(f"src has shape {list(src.shape)}; the export I/O takes 4D [B, 3, H, W]")
        if self.ratio_input:
            if downsample_ratio is None:
                raise InputContractError("downsample_ratio is missing; this graph takes it as a float32 tensor of "
                                         "shape [1]")
            src_sm = ResizeByFactor.apply(src, downsample_ratio)
        else:
            if downsample_ratio is not None:
                raise InputContractError(f"downsample_ratio is baked into this graph ({self.baked_ratio}); do not "
                                         f"pass it")
            src_sm = src if self.baked_ratio == 1.0 else resize_by_factor(src, self.baked_ratio)
        return tuple(self.run(src, src_sm, r1i, r2i, r3i, r4i, True, True, False))


class MattingNetworkScript(nn.Module):
    """What the TorchScript artifact scripts: master's :class:`MattingNetwork` (its own ``forward``: float
    ratio, ``Optional`` states, refiner skipped at ratio 1) behind the tensor I/O every runtime feeds.

    ``forward(src, r1i, r2i, r3i, r4i, downsample_ratio)``: ``src`` ``(B, 3, H, W)``, full-size states in the
    model dtype, ``downsample_ratio`` a float32 ``[1]`` tensor read with ``.item()`` into master's float
    argument -> ``(fgr, pha, r1o, r2o, r3o, r4o)``. Built from any :class:`MattingNetwork` (weights copied into
    a plain one in the same dtype, so the export subclass's forward is not what gets scripted).
    """

    def __init__(self, model: MattingNetwork) -> None:
        super().__init__()
        p = next(model.parameters())
        self.model = MattingNetwork(model.variant, model.refiner_name).to(p.dtype)
        self.model.load_state_dict(model.state_dict())
        self.model.train(model.training)
        self.training = model.training

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor,
                downsample_ratio: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        out = self.model(src, r1i, r2i, r3i, r4i, float(downsample_ratio.item()))
        return out[0], out[1], out[2], out[3], out[4], out[5]


def input_names(runtime_ratio: bool) -> List[str]:
    """``["src", "r1i", .., "r4i"]`` plus ``"downsample_ratio"`` for the runtime-ratio contract."""
    return ["src", *STATE_INPUT_NAMES] + (["downsample_ratio"] if runtime_ratio else [])


def dynamic_axes(distinct: bool = False) -> Dict[str, Dict[int, str]]:
    """``dynamic_axes`` for ``torch.onnx.export``.

    ``distinct=False``: the official names, shared across tensors (``batch_size``, ``height``, ``width``,
    ``channels`` for r*i), which TensorRT reads as equal dims (§4). ``distinct=True``: the TensorRT recipe's
    unique names: src ``*0``, fgr ``*1``, pha ``*2``, r1i..r4i ``*3..*6`` (with ``channelsN``), r1o..r4o
    ``*7..*10``.
    """
    if not distinct:
        image = {0: "batch_size", 2: "height", 3: "width"}
        state = {0: "batch_size", 1: "channels", 2: "height", 3: "width"}
        axes = {"src": dict(image), "fgr": dict(image), "pha": dict(image)}
        axes.update({n: dict(state) for n in STATE_INPUT_NAMES})
        axes.update({n: dict(image) for n in OUTPUT_NAMES[2:]})
        return axes

    def names(i: int, channels: bool = False) -> Dict[int, str]:
        d = {0: f"batch_size{i}", 2: f"height{i}", 3: f"width{i}"}
        if channels:
            d[1] = f"channels{i}"
        return dict(sorted(d.items()))

    axes = {"src": names(0), "fgr": names(1), "pha": names(2)}
    axes.update({n: names(3 + k, True) for k, n in enumerate(STATE_INPUT_NAMES)})
    axes.update({n: names(7 + k) for k, n in enumerate(OUTPUT_NAMES[2:])})
    return axes


__all__ = ["MattingNetworkExport", "MattingNetworkScript", "OUTPUT_NAMES", "RecurrentExport", "ResizeByFactor", "STATE_INPUT_NAMES", "dynamic_axes", "input_names"]
