"""``MattingNetwork`` of RobustVideoMatting with master-branch semantics (spec: rvm-model.md §1.1, §1.5, §1.7).

State_dict keys, their order and shapes equal master's (``tests/data/rvm_keys_*.txt``), so the released
``rvm_mobilenetv3.pth`` / ``rvm_resnet50.pth`` load strictly into the ``deep_guided_filter`` models. The
module is ``torch.jit.script``-able (and ``torch.jit.freeze``-able in eval mode).
"""

from __future__ import annotations

from typing import List, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import MobileNetV3LargeEncoder, ResNet50Encoder
from .constants import REFINERS, VARIANTS
from .decoder import RecurrentDecoder
from .lraspp import LRASPP
from .refiners import DeepGuidedFilterRefiner, FastGuidedFilterRefiner


class Projection(nn.Module):
    """A 1x1 conv with bias (keys ``conv.weight``, ``conv.bias``), time-flattened for 5D input.

    Forward: ``(N, in, h, w)`` or ``(B, T, in, h, w)`` -> same rank with ``out`` channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        if x.ndim == 5:
            b, t = x.shape[0], x.shape[1]
            return self.conv(x.flatten(0, 1)).unflatten(0, (b, t))
        return self.conv(x)


def resize_by_factor(x: Tensor, scale_factor: float) -> Tensor:
    """``src_sm``: bilinear resize of ``x`` (4D or 5D) by ``scale_factor`` (§1.7 step 1).

    align_corners=False and ``recompute_scale_factor=False``: the output is ``floor(H r) x floor(W r)`` and
    source coordinates come from the given scale, ``(dst + 0.5) / r - 0.5``.
    """
    if x.ndim == 5:
        b, t = x.shape[0], x.shape[1]
        y = F.interpolate(x.flatten(0, 1), scale_factor=scale_factor, mode="bilinear", align_corners=False,
                          recompute_scale_factor=False)
        return y.unflatten(0, (b, t))
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


class MattingNetwork(nn.Module):
    """RobustVideoMatting: encoder -> LRASPP -> recurrent decoder -> heads -> guided-filter refiner.

    Args:
        variant: ``"mobilenetv3"`` (3,748,633 parameters with DGF) or ``"resnet50"`` (26,890,461).
        refiner: ``"deep_guided_filter"`` (default; the released weights) or ``"fast_guided_filter"``
            (parameter-free: load a DGF checkpoint minus ``refiner.*`` with :func:`model.rvm.load_checkpoint`).
        pretrained_backbone: must be False: ImageNet weights would need a download.

    Raises:
        ValueError: unknown ``variant`` or ``refiner``.
        CheckpointError: ``pretrained_backbone=True``.

    ``forward(src, r1=None, r2=None, r3=None, r4=None, downsample_ratio=1.0, segmentation_pass=False)``:
        src: RGB in [0, 1], ``(B, 3, H, W)`` or ``(B, T, 3, H, W)``, float32 or the model's float16.
        r1..r4: recurrent states from the previous call, or None for zeros (the first frame). 4D
            ``(B, c_k, ceil(h/2^k), ceil(w/2^k))`` with ``h, w = floor(H r), floor(W r)``; channels
            mobilenetv3 16/20/40/64, resnet50 16/32/64/128 (see :func:`model.rvm.state_shapes`).
        downsample_ratio: ``r`` in (0, 1]. ``r != 1`` resizes src to ``src_sm`` (:func:`resize_by_factor`)
            and runs the refiner to return full resolution; ``r == 1`` runs on ``src`` and **skips** the
            refiner (§1.6).
        segmentation_pass: return segmentation logits instead of the matte.

    Returns a list ``[fgr, pha, r1o, r2o, r3o, r4o]``: ``fgr`` ``(…, 3, H, W)`` = clamp(residual + src, 0, 1),
    ``pha`` ``(…, 1, H, W)`` in [0, 1] (same rank as src), states 4D in [-1, 1]; or, with
    ``segmentation_pass``, ``[seg, r1o, r2o, r3o, r4o]`` with ``seg`` ``(…, 1, h, w)`` unclamped logits at
    ``src_sm`` resolution.

    Running T frames as one 5D chunk equals a per-frame loop that feeds the states back.
    """

    def __init__(self, variant: str = "mobilenetv3", refiner: str = "deep_guided_filter",
                 pretrained_backbone: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}; expected one of {list(VARIANTS)}")
        if refiner not in REFINERS:
            raise ValueError(f"refiner={refiner!r}; expected one of {list(REFINERS)}")
        self.variant = variant
        self.refiner_name = refiner
        if variant == "mobilenetv3":
            self.backbone = MobileNetV3LargeEncoder(pretrained_backbone)
            self.aspp = LRASPP(960, 128)
            self.decoder = RecurrentDecoder([16, 24, 40, 128], [80, 40, 32, 16])
        else:
            self.backbone = ResNet50Encoder(pretrained_backbone)
            self.aspp = LRASPP(2048, 256)
            self.decoder = RecurrentDecoder([64, 256, 512, 256], [128, 64, 32, 16])
        self.project_mat = Projection(16, 4)
        self.project_seg = Projection(16, 1)
        if refiner == "deep_guided_filter":
            self.refiner = DeepGuidedFilterRefiner()
        else:
            self.refiner = FastGuidedFilterRefiner()

    def forward(  # noqa: D102 - documented on the class
        self,
        src: Tensor,
        r1: Optional[Tensor] = None,
        r2: Optional[Tensor] = None,
        r3: Optional[Tensor] = None,
        r4: Optional[Tensor] = None,
        downsample_ratio: float = 1.0,
        segmentation_pass: bool = False,
    ) -> List[Tensor]:
        if downsample_ratio != 1:
            src_sm = resize_by_factor(src, downsample_ratio)
        else:
            src_sm = src
        return self.run(src, src_sm, r1, r2, r3, r4, downsample_ratio != 1, False, segmentation_pass)

    def decode(self, src_sm: Tensor, r1: Optional[Tensor], r2: Optional[Tensor], r3: Optional[Tensor],
               r4: Optional[Tensor], broadcast_state: bool = False) -> List[Tensor]:
        """Encoder, LRASPP and decoder on ``src_sm`` -> ``[hid, r1o, r2o, r3o, r4o]`` (hid: 16 ch at src_sm size).

        ``broadcast_state`` expands each given state to its GRU input's shape (export wrapper only).
        """
        f1, f2, f3, f4 = self.backbone(src_sm)
        f4 = self.aspp(f4)
        return self.decoder(src_sm, f1, f2, f3, f4, r1, r2, r3, r4, broadcast_state)

    def run(self, src: Tensor, src_sm: Tensor, r1: Optional[Tensor], r2: Optional[Tensor], r3: Optional[Tensor],
            r4: Optional[Tensor], refine: bool, broadcast_state: bool = False,
            segmentation_pass: bool = False) -> List[Tensor]:
        """Everything after the first resize; :meth:`forward` passes ``refine = (downsample_ratio != 1)`` and
        ``broadcast_state=False``, the export wrapper ``refine=True, broadcast_state=True`` (the onnx branch's
        export behaviour, §3.1). Returns what :meth:`forward` returns."""
        hid, r1o, r2o, r3o, r4o = self.decode(src_sm, r1, r2, r3, r4, broadcast_state)
        if segmentation_pass:
            return [self.project_seg(hid), r1o, r2o, r3o, r4o]
        fgr_residual, pha = self.project_mat(hid).split([3, 1], dim=-3)
        if refine:
            fgr_residual, pha = self.refiner(src, src_sm, fgr_residual, pha, hid)
        fgr = (fgr_residual + src).clamp(0.0, 1.0)
        pha = pha.clamp(0.0, 1.0)
        return [fgr, pha, r1o, r2o, r3o, r4o]


__all__ = ["MattingNetwork", "Projection", "resize_by_factor"]
