"""Weights whose activations look trained, for running the matrix without a checkpoint.

Why not raw random init: with BatchNorm running statistics at their defaults (mean 0, var 1) the
activations of a randomly initialised network drift layer after layer, so fp16 exports can overflow to
inf for reasons no trained model has, and the coarse error head is clamped to exactly 0 almost
everywhere - sampling mode then picks patches by breaking ties among equal zeros, which is
implementation-defined, and every backend comparison becomes meaningless (spec §2.5).

Recipe (deterministic for a given seed, images and torch build):

1. ``torch.manual_seed(seed)`` and construct the model (torchvision's default init).
2. Reset every BatchNorm and set ``momentum=None`` (cumulative average), run the coarse network in
   train mode on the real images, then switch to eval: running stats now equal the real activation
   statistics.
3. Affinely rescale ``decoder.conv4`` per output channel so that, on the same images, alpha has mean
   0.5 / std 0.25, the foreground residual mean 0 / std 0.05, the error mean 0.05 / std 0.1 (about a
   third of the cells exceed the default 0.1 threshold and about 30 % clamp to exactly 0, which
   exercises ``prevent_oversampling``) and the hidden channels mean 0 / std 1.
4. Calibrate the refiner's BatchNorms the same way in ``full`` mode (every pixel), then rescale
   ``refiner.conv4`` (alpha mean 0.5 / std 0.25, residual mean 0 / std 0.05).
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matting import MattingRefine

# (mean, std) targets per decoder.conv4 output group: alpha, fgr residual (3), err, hidden (32)
_DECODER_TARGETS = [(0.5, 0.25)] + [(0.0, 0.05)] * 3 + [(0.05, 0.1)] + [(0.0, 1.0)] * 32
_REFINER_TARGETS = [(0.5, 0.25)] + [(0.0, 0.05)] * 3


def _bn_layers(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _rescale_conv(conv: nn.Conv2d, outputs: Tensor, targets: Sequence[Tuple[float, float]]) -> None:
    """Make channel ``c`` of ``conv``'s output have mean/std ``targets[c]`` given sample ``outputs``."""
    dims = [0, 2, 3]
    mean = outputs.mean(dim=dims).double()
    std = outputs.std(dim=dims).double().clamp_min(1e-6)
    t_mean = torch.tensor([t[0] for t in targets], dtype=torch.float64)
    t_std = torch.tensor([t[1] for t in targets], dtype=torch.float64)
    gain = t_std / std
    with torch.no_grad():
        conv.weight.mul_(gain.view(-1, 1, 1, 1).to(conv.weight.dtype))
        conv.bias.copy_(((conv.bias.double() - mean) * gain + t_mean).to(conv.bias.dtype))


def calibrate(model: MattingRefine, batches: Iterable[Tuple[Tensor, Tensor]], passes: int = 2) -> MattingRefine:
    """Calibrate ``model`` in place on real ``(src, bgr)`` batches and return it in eval mode.

    Args:
        model: a float32 :class:`MattingRefine` on the CPU.
        batches: ``(src, bgr)`` pairs, each ``(B, 3, H, W)`` float32 RGB in [0, 1], B >= 2 (train-mode
            BatchNorm needs more than one value per channel in the ASPP pooling branch), H and W
            multiples of 4.
        passes: train-mode passes over ``batches`` per stage.

    Raises:
        ValueError: no batches, or a batch with B < 2.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate() needs at least one (src, bgr) batch of real images")
    for src, _ in batches:
        if src.shape[0] < 2:
            raise ValueError(f"calibration batches need B >= 2, got shape {list(src.shape)}")
    scale = model.backbone_scale

    def coarse_inputs(src: Tensor, bgr: Tensor) -> Tensor:
        kw = dict(scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=True)
        return torch.cat([F.interpolate(src, **kw), F.interpolate(bgr, **kw)], dim=1)

    with torch.no_grad():
        for bn in _bn_layers(model):
            bn.reset_running_stats()
            bn.momentum = None
        model.eval()
        for m in (model.backbone, model.aspp, model.decoder):
            m.train()
        for _ in range(passes):
            for src, bgr in batches:
                model.encode_decode(coarse_inputs(src, bgr))
        model.eval()
        outs = torch.cat([model.encode_decode(coarse_inputs(s, b)) for s, b in batches])
        _rescale_conv(model.decoder.conv4, outs, _DECODER_TARGETS)

        refiner = model.refiner
        refiner.train()
        for _ in range(passes):
            for src, bgr in batches:
                model.infer(src, bgr, scale, "full", refiner.sample_pixels, refiner.threshold, False)
        refiner.eval()
        raw = []
        for src, bgr in batches:
            x = model.encode_decode(coarse_inputs(src, bgr))
            pha, fgr, _ = refiner.refine(
                src, bgr, x[:, 0:1].clamp(0, 1), x[:, 1:4], x[:, 4:5].clamp(0, 1), x[:, 5:].relu(),
                "full", refiner.sample_pixels, refiner.threshold, False,
            )
            raw.append(torch.cat([pha, fgr], dim=1))
        _rescale_conv(refiner.conv4, torch.cat(raw), _REFINER_TARGETS)
        for bn in _bn_layers(model):
            bn.momentum = 0.1
    return model.eval()
