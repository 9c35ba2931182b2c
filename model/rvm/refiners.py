"""Guided-filter refiners of RobustVideoMatting (spec: rvm-model.md §1.6).

Both upsample the low-resolution prediction to the full source resolution. Inputs, all 4D ``(N, ., h, w)``
or all 5D ``(B, T, ., h, w)`` (time is flattened into the batch):

- ``fine_src``: full-resolution RGB ``(N, 3, H, W)`` in [0, 1];
- ``base_src``: ``src_sm`` ``(N, 3, h, w)``, the resized source the network ran on;
- ``base_fgr``: foreground *residual* ``(N, 3, h, w)`` (unclamped);
- ``base_pha``: alpha ``(N, 1, h, w)`` (unclamped);
- ``base_hid``: decoder hidden features ``(N, 16, h, w)`` (the FGF ignores them).

Both return ``(fgr_residual (N, 3, H, W), pha (N, 1, H, W))``, still unclamped. The guide is the 4-channel
``[RGB, mean over RGB]`` at each resolution, filtered channel by channel against ``[fgr_residual, pha]``.
A and b are resized bilinearly (align_corners=False) to ``H x W`` and the output is ``A * x_fine + b``.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _guide(x: Tensor) -> Tensor:
    """``(N, 3, H, W)`` RGB -> ``(N, 4, H, W)`` ``[R, G, B, mean(R, G, B)]``."""
    return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)


class DeepGuidedFilterRefiner(nn.Module):
    """Deep guided filter with a learnable box filter and a 1x1-conv coefficient network (default refiner).

    Keys: ``box_filter.weight [4, 1, 3, 3]`` (depthwise 3x3, padding 1 with zeros, no bias, initialised to
    1/9 but learnable, borders not renormalised); ``conv.0 [hid, 24, 1, 1]``, ``conv.1`` BN, ``conv.3
    [hid, hid, 1, 1]``, ``conv.4`` BN, ``conv.6 [4, hid, 1, 1]`` + bias.

    ``A = conv([cov_xy, var_x, hid])`` (4 + 4 + hid channels), ``b = mean_y - A * mean_x``, with box-filter
    means ``mean_x``, ``mean_y``, ``cov_xy = box(x y) - mean_x mean_y``, ``var_x = box(x x) - mean_x^2``.

    Args:
        hid_channels: channels of ``base_hid`` (16).
    """

    def __init__(self, hid_channels: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False, groups=4)
        with torch.no_grad():
            self.box_filter.weight.fill_(1.0 / 9.0)
        self.conv = nn.Sequential(
            nn.Conv2d(4 * 2 + hid_channels, hid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(hid_channels),
            nn.ReLU(True),
            nn.Conv2d(hid_channels, hid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(hid_channels),
            nn.ReLU(True),
            nn.Conv2d(hid_channels, 4, kernel_size=1, bias=True),
        )

    def coefficients(
        self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Low-resolution ``(A, b)``, each ``(N, 4, h, w)`` (channel order fgr R, G, B, alpha); 4D inputs."""
        x = _guide(base_src)
        y = torch.cat([base_fgr, base_pha], dim=1)
        mean_x = self.box_filter(x)
        mean_y = self.box_filter(y)
        cov_xy = self.box_filter(x * y) - mean_x * mean_y
        var_x = self.box_filter(x * x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))
        b = mean_y - a * mean_x
        return a, b

    def forward_single_frame(
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """4D inputs (see the module docstring) -> ``(fgr_residual, pha)`` at ``fine_src``'s size."""
        a, b = self.coefficients(base_src, base_fgr, base_pha, base_hid)
        size = [fine_src.size(2), fine_src.size(3)]
        a = F.interpolate(a, size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size, mode="bilinear", align_corners=False)
        out = a * _guide(fine_src) + b
        fgr, pha = out.split([3, 1], dim=1)
        return fgr, pha

    def forward(  # noqa: D102 - documented on the module
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> Tuple[Tensor, Tensor]:
        if fine_src.ndim == 5:
            b, t = fine_src.shape[0], fine_src.shape[1]
            fgr, pha = self.forward_single_frame(
                fine_src.flatten(0, 1), base_src.flatten(0, 1), base_fgr.flatten(0, 1), base_pha.flatten(0, 1),
                base_hid.flatten(0, 1))
            return fgr.unflatten(0, (b, t)), pha.unflatten(0, (b, t))
        return self.forward_single_frame(fine_src, base_src, base_fgr, base_pha, base_hid)


class FastGuidedFilter(nn.Module):
    """Classical (fast) guided filter, radius ``r``, regulariser ``eps``; no parameters.

    Box filter: two separable zero-padded convolutions with kernels ``1 x (2r+1)`` and ``(2r+1) x 1`` of
    weight ``1/(2r+1)``, built on the fly in the input's dtype. ``A = cov_xy / (var_x + eps)``,
    ``b = mean_y - A mean_x``, both resized bilinearly to the fine size; output ``A * hr_x + b``.

    Forward ``(lr_x, lr_y, hr_x)``: ``(N, C, h, w)``, ``(N, C, h, w)``, ``(N, C, H, W)`` -> ``(N, C, H, W)``.
    """

    def __init__(self, r: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.r = r
        self.eps = eps

    def box(self, x: Tensor) -> Tensor:
        """Separable ``(2r+1)^2`` mean filter with zero padding (borders not renormalised), per channel.

        The channels are folded into the batch so the kernels have a static shape ``[1, 1, 1, k]`` /
        ``[1, 1, k, 1]`` (the legacy ONNX exporter needs static kernel shapes, and after a runtime-scale
        Resize the channel count is unknown to it); the arithmetic equals a depthwise conv."""
        k = 2 * self.r + 1
        kx = torch.full((1, 1, 1, k), 1.0 / k, device=x.device, dtype=x.dtype)
        ky = torch.full((1, 1, k, 1), 1.0 / k, device=x.device, dtype=x.dtype)
        y = x.flatten(0, 1).unsqueeze(1)
        y = F.conv2d(y, kx, padding=(0, self.r))
        y = F.conv2d(y, ky, padding=(self.r, 0))
        return y.reshape(x.shape)

    def forward(self, lr_x: Tensor, lr_y: Tensor, hr_x: Tensor) -> Tensor:  # noqa: D102
        mean_x = self.box(lr_x)
        mean_y = self.box(lr_y)
        cov_xy = self.box(lr_x * lr_y) - mean_x * mean_y
        var_x = self.box(lr_x * lr_x) - mean_x * mean_x
        a = cov_xy / (var_x + self.eps)
        b = mean_y - a * mean_x
        size = [hr_x.size(2), hr_x.size(3)]
        a = F.interpolate(a, size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size, mode="bilinear", align_corners=False)
        return a * hr_x + b


class FastGuidedFilterRefiner(nn.Module):
    """Refiner using :class:`FastGuidedFilter` ``(r=1, eps=1e-5)``; no parameters, so no state_dict keys.

    The attribute keeps the upstream spelling ``guilded_filter``. ``base_hid`` is accepted and ignored.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.guilded_filter = FastGuidedFilter(1, 1e-5)

    def forward_single_frame(
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """4D inputs -> ``(fgr_residual, pha)`` at ``fine_src``'s size."""
        out = self.guilded_filter(_guide(base_src), torch.cat([base_fgr, base_pha], dim=1), _guide(fine_src))
        fgr, pha = out.split([3, 1], dim=1)
        return fgr, pha

    def forward(  # noqa: D102 - documented on the module
        self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor, base_hid: Tensor
    ) -> Tuple[Tensor, Tensor]:
        if fine_src.ndim == 5:
            b, t = fine_src.shape[0], fine_src.shape[1]
            fgr, pha = self.forward_single_frame(
                fine_src.flatten(0, 1), base_src.flatten(0, 1), base_fgr.flatten(0, 1), base_pha.flatten(0, 1))
            return fgr.unflatten(0, (b, t)), pha.unflatten(0, (b, t))
        return self.forward_single_frame(fine_src, base_src, base_fgr, base_pha)


__all__ = ["DeepGuidedFilterRefiner", "FastGuidedFilter", "FastGuidedFilterRefiner"]
