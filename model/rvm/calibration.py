"""Weights whose activations look trained, for comparing backends without a checkpoint.

Why: with random initialisation and default BatchNorm statistics (mean 0, var 1), activations drift
layer after layer and RVM's alpha saturates to exactly 0 or 1 almost everywhere after the clamp (spec:
rvm-model.md §5 A, "with random weights its pha saturates"), so parity comparisons of ``pha`` say nothing.

Recipe (deterministic for a given seed, frames and torch build; no randomness of its own):

1. Reset every BatchNorm and set ``momentum=None`` (cumulative average), run backbone, LRASPP and decoder in
   train mode over the real frames ``passes`` times (at ``downsample_ratio``, states fed back between frames
   of equal size), then switch to eval: running stats now equal real activation statistics.
2. Affinely rescale ``project_mat.conv`` per output channel so that on the same frames (eval mode) the
   foreground residual has mean 0 / std 0.05 and alpha mean 0.5 / std 0.25; ``project_seg.conv`` gets
   logits with mean 0 / std 2.
3. Deep guided filter only: calibrate the refiner's BatchNorms the same way at ``refine_ratio`` (0.5, so the
   refiner runs), then rescale ``refiner.conv.6``. That conv outputs the guided-filter coefficients ``A``
   (the refined output is ``A * (x_fine - mean_x) + mean_y``, so its mean and spread come from the base
   prediction rescaled in step 2); ``A`` is rescaled to mean 0 / std 0.5 for the three fgr channels and
   mean 0 / std 1 for alpha, modest detail transfer like a guided filter's.
4. Restore BatchNorm momentum: 0.01 in the mobilenetv3 backbone (torchvision's), 0.1 everywhere else.

The result: alpha is neither flat nor saturated (std about 0.2 on real images), so max-abs-error parity
checks between eager, TorchScript and exported graphs are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .matting import MattingNetwork, resize_by_factor

#: (mean, std) per output channel of project_mat.conv: fgr residual R, G, B, then alpha.
MAT_TARGETS = [(0.0, 0.05)] * 3 + [(0.5, 0.25)]
SEG_TARGETS = [(0.0, 2.0)]
#: (mean, std) of the DGF coefficients A (refiner.conv.6): fgr R, G, B, alpha.
REFINER_A_TARGETS = [(0.0, 0.5)] * 3 + [(0.0, 1.0)]
#: The repository's shipped sample photos (see harness/data/samples/SOURCES.md).
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "harness" / "data" / "samples"


def _bn_layers(module: nn.Module) -> List[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _rescale_conv(conv: nn.Conv2d, outputs: Sequence[Tensor], targets: Sequence[Tuple[float, float]]) -> None:
    """Make channel ``c`` of ``conv``'s output have mean/std ``targets[c]`` on the sample ``outputs`` (each
    ``(N, C, h, w)``, sizes may differ), by scaling its weights and shifting its bias. Mean and std are
    averaged over the images (the std *within* each image, so every single frame has the spread)."""
    per_image = [x.reshape(x.shape[0], -1).double() for o in outputs for x in o.detach().transpose(0, 1).unbind(1)]
    mean = torch.stack([x.mean(dim=1) for x in per_image]).mean(dim=0)
    std = torch.stack([x.std(dim=1) for x in per_image]).mean(dim=0).clamp_min(1e-6)
    t_mean = torch.tensor([t[0] for t in targets], dtype=torch.float64)
    t_std = torch.tensor([t[1] for t in targets], dtype=torch.float64)
    gain = t_std / std
    with torch.no_grad():
        conv.weight.mul_(gain.view(-1, 1, 1, 1).to(conv.weight.dtype))
        conv.bias.copy_(((conv.bias.double() - mean) * gain + t_mean).to(conv.bias.dtype))


def _clip(frames: Sequence[Tensor]) -> Iterable[Tuple[Tensor, bool]]:
    """Yield ``(frame, reset)``: ``reset`` when the size changes (states cannot be fed back)."""
    prev: Optional[torch.Size] = None
    for f in frames:
        yield f, f.shape != prev
        prev = f.shape


def _check_frames(frames: Sequence[Tensor]) -> None:
    if not frames:
        raise ValueError("calibrate() needs at least one frame of real images")
    for i, f in enumerate(frames):
        if not isinstance(f, Tensor) or f.ndim != 4 or f.shape[1] != 3 or f.dtype != torch.float32:
            got = list(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"frames[{i}]: expected a float32 (B, 3, H, W) RGB tensor in [0, 1], got {got}")
        if float(f.min()) < -0.01 or float(f.max()) > 1.01:
            raise ValueError(f"frames[{i}] values span [{float(f.min()):.3g}, {float(f.max()):.3g}]; expected [0, 1]")


def calibrate(model: MattingNetwork, frames: Sequence[Tensor], passes: int = 2, downsample_ratio: float = 1.0,
              refine_ratio: float = 0.5) -> MattingNetwork:
    """Calibrate ``model`` in place on real frames (see the module docstring) and return it in eval mode.

    Args:
        model: a float32 :class:`MattingNetwork` on the CPU (either variant, either refiner).
        frames: ``(B, 3, H, W)`` float32 RGB in [0, 1], treated as a clip: consecutive frames of equal size
            feed their recurrent states forward. Sides must stay >= 16 px at both ratios.
        passes: train-mode passes over ``frames`` per BatchNorm stage.
        downsample_ratio: ratio of the backbone/decoder stage (1.0: the frames' own resolution).
        refine_ratio: ratio (< 1) of the refiner stage, so the refiner runs.

    Raises:
        ValueError: no frames, a frame that is not float32 ``(B, 3, H, W)`` in [0, 1], or ``refine_ratio`` 1.
    """
    frames = list(frames)
    _check_frames(frames)
    if not 0 < refine_ratio < 1:
        raise ValueError(f"refine_ratio={refine_ratio!r}; expected 0 < r < 1 so that the refiner runs")
    is_dgf = any(True for _ in model.refiner.parameters())

    def sequence(ratio: float) -> List[List[Tensor]]:
        """Run the frames as a clip at ``ratio``; per frame ``[src, src_sm, hid, fgr_res, pha]``."""
        outs = []
        states: List[Optional[Tensor]] = [None] * 4
        for f, reset in _clip(frames):
            if reset:
                states = [None] * 4
            src_sm = f if ratio == 1 else resize_by_factor(f, ratio)
            hid, *states = model.decode(src_sm, *states)
            fgr_res, pha = model.project_mat(hid).split([3, 1], dim=1)
            outs.append([f, src_sm, hid, fgr_res, pha])
        return outs

    with torch.no_grad():
        for bn in _bn_layers(model):
            bn.reset_running_stats()
            bn.momentum = None
        model.eval()
        for m in (model.backbone, model.aspp, model.decoder):
            m.train()
        for _ in range(passes):
            sequence(downsample_ratio)
        model.eval()
        outs = sequence(downsample_ratio)
        _rescale_conv(model.project_mat.conv, [model.project_mat(o[2]) for o in outs], MAT_TARGETS)
        _rescale_conv(model.project_seg.conv, [model.project_seg(o[2]) for o in outs], SEG_TARGETS)

        if is_dgf:
            refiner = model.refiner
            refiner.train()
            for _ in range(passes):
                for f, src_sm, hid, fgr_res, pha in sequence(refine_ratio):
                    refiner(f, src_sm, fgr_res, pha, hid)
            refiner.eval()
            coeffs = [refiner.coefficients(src_sm, fgr_res, pha, hid)[0]
                      for _, src_sm, hid, fgr_res, pha in sequence(refine_ratio)]
            _rescale_conv(refiner.conv[6], coeffs, REFINER_A_TARGETS)

        mbv3_backbone = set(_bn_layers(model.backbone)) if model.variant == "mobilenetv3" else set()
        for bn in _bn_layers(model):
            bn.momentum = 0.01 if bn in mbv3_backbone else 0.1
    return model.eval()


def load_sample_frames(size: Tuple[int, int], names: Sequence[str] = ("horse_grass", "rocket_coffee",
                                                                     "hubble_astronaut")) -> List[Tensor]:
    """The shipped ``<name>_small_src.png`` photos resized (PIL bilinear) to ``size = (H, W)``.

    Returns one ``(1, 3, H, W)`` float32 tensor in [0, 1] per name.
    """
    import numpy as np
    from PIL import Image

    out = []
    for name in names:
        im = Image.open(SAMPLES_DIR / f"{name}_small_src.png").convert("RGB")
        if (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous())
    return out


def calibrated_model(variant: str = "mobilenetv3", refiner: str = "deep_guided_filter", seed: int = 0,
                     size: Tuple[int, int] = (144, 256), passes: int = 2) -> MattingNetwork:
    """``torch.manual_seed(seed)``, build ``MattingNetwork(variant, refiner)`` and :func:`calibrate` it on the
    shipped sample photos at ``size`` (plus their mirror images); returns it in eval mode."""
    torch.manual_seed(seed)
    model = MattingNetwork(variant, refiner)
    frames = load_sample_frames(size)
    frames = frames + [f.flip(-1) for f in frames]
    return calibrate(model, frames, passes=passes)


__all__ = ["MAT_TARGETS", "REFINER_A_TARGETS", "SEG_TARGETS", "calibrate", "calibrated_model", "load_sample_frames"]
