"""ASPP + skip-connection decoder of BackgroundMattingV2 (spec: bgmv2-model.md §1.3, §1.4)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

__all__ = ["ASPP", "Decoder", "build_aspp"]


def build_aspp(in_channels: int) -> ASPP:
    """torchvision DeepLabV3 ASPP with atrous rates (3, 6, 9) and 256 output channels.

    Input ``(B, in_channels, h, w)`` -> output ``(B, 256, h, w)``.
    """
    return ASPP(in_channels, [3, 6, 9])


class Decoder(nn.Module):
    """Four-stage decoder: bilinear resize to each skip's exact size, concat, 3x3 conv.

    Args:
        channels: output channels of the four convs, ``[256, 128, 64, 48, 37]`` in BMV2 (the first
            entry is the ASPP width).
        feature_channels: channels of the skips ``x3, x2, x1, x0``; mobilenetv2 ``[32, 24, 16, 6]``,
            resnet ``[512, 256, 64, 6]``.

    ``forward(x4, x3, x2, x1, x0)`` returns ``(B, channels[4], H, W)`` at ``x0``'s size. Upsampling
    is size-matched (odd sizes such as 68 -> 135 occur), not a fixed x2.
    """

    def __init__(self, channels: List[int], feature_channels: List[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_channels[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(feature_channels[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(feature_channels[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(feature_channels[3] + channels[3], channels[4], 3, padding=1, bias=True)
        self.relu = nn.ReLU(True)

    @staticmethod
    def _up(x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def forward(self, x4: Tensor, x3: Tensor, x2: Tensor, x1: Tensor, x0: Tensor) -> Tensor:  # noqa: D102
        x = self.relu(self.bn1(self.conv1(self._up(x4, x3))))
        x = self.relu(self.bn2(self.conv2(self._up(x, x2))))
        x = self.relu(self.bn3(self.conv3(self._up(x, x1))))
        return self.conv4(self._up(x, x0))
