"""Lite R-ASPP head of RobustVideoMatting (spec: rvm-model.md §1.3)."""

from __future__ import annotations

from torch import Tensor, nn


class LRASPP(nn.Module):
    """Lite R-ASPP: a 1x1 conv/BN/ReLU branch gated by a global-pool 1x1 conv/sigmoid branch.

    Keys: ``aspp1.0`` (Conv1x1 in->out, no bias), ``aspp1.1`` (BatchNorm, eps 1e-5), ``aspp2.1`` (Conv1x1
    in->out, no bias; index 0 is the parameter-free global average pool).

    Args:
        in_channels: 960 (mobilenetv3) or 2048 (resnet50).
        out_channels: 128 (mobilenetv3) or 256 (resnet50).

    Forward: ``x`` ``(N, in, h, w)`` or ``(B, T, in, h, w)`` float -> same rank with ``out`` channels:
    ``aspp1(x) * aspp2(x)`` (the ``(N, out, 1, 1)`` gate in (0, 1) broadcast over h, w).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )
        self.aspp2 = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward_single_frame(self, x: Tensor) -> Tensor:
        """``(N, in, h, w)`` -> ``(N, out, h, w)``."""
        return self.aspp1(x) * self.aspp2(x)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        if x.ndim == 5:
            b, t = x.shape[0], x.shape[1]
            return self.forward_single_frame(x.flatten(0, 1)).unflatten(0, (b, t))
        return self.forward_single_frame(x)


__all__ = ["LRASPP"]
