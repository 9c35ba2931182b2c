"""Encoders of RobustVideoMatting, built from torchvision so state_dict keys match (spec: rvm-model.md §1.2).

Both take RGB in [0, 1], either ``(N, 3, H, W)`` or ``(B, T, 3, H, W)`` (time is flattened into the batch
and restored afterwards), and return four feature maps ``(f1, f2, f3, f4)`` at strides 2, 4, 8 and 16, with
the same rank as the input. Spatial sizes are iterated ceil-halvings of ``H`` and ``W``.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.resnet import Bottleneck, ResNet

#: ImageNet statistics the MobileNetV3 encoder normalises with (§1.2); the ResNet encoder does not normalise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _unflatten(xs: List[Tensor], b: int, t: int) -> List[Tensor]:
    return [x.unflatten(0, (b, t)) for x in xs]


class MobileNetV3LargeEncoder(nn.Module):
    """torchvision ``mobilenet_v3_large(dilated=True).features`` as ``self.features`` (output stride 16).

    Keys are ``features.{0..16}.*`` exactly as torchvision's (308 state_dict entries); BatchNorm uses
    torchvision's eps 1e-3 / momentum 0.01. ``avgpool`` and ``classifier`` are not kept.

    Forward: ``x`` RGB in [0, 1], ``(N, 3, H, W)`` or ``(B, T, 3, H, W)``, is ImageNet-normalised with
    plain arithmetic ``(x - mean) / std`` (same maths as torchvision ``normalize``, which blocks the dynamo
    exporter, §5 C) and returns ``[f1, f2, f3, f4]`` = outputs of ``features[1]`` (16 ch, /2),
    ``features[3]`` (24 ch, /4), ``features[6]`` (40 ch, /8) and ``features[16]`` (960 ch, /16).

    Raises:
        CheckpointError: ``pretrained=True`` (ImageNet weights need a download, which this project never does).
    """

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        if pretrained:
            from .errors import CheckpointError

            raise CheckpointError(
                "pretrained_backbone=True would download the ImageNet weights mobilenet_v3_large-8738ca79.pth; "
                "this project never downloads: use pretrained_backbone=False and load an RVM checkpoint with "
                "model.rvm.load_checkpoint()")
        self.features = mobilenet_v3_large(weights=None, dilated=True).features
        # non-persistent: not in the state_dict, but follow .to()/.half()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward_single_frame(self, x: Tensor) -> List[Tensor]:
        """``x`` ``(N, 3, H, W)`` in [0, 1] -> ``[f1, f2, f3, f4]`` (see the class docstring)."""
        x = (x - self.mean) / self.std
        f = self.features
        x = f[0](x)
        x = f[1](x)
        f1 = x
        x = f[2](x)
        x = f[3](x)
        f2 = x
        x = f[4](x)
        x = f[5](x)
        x = f[6](x)
        f3 = x
        x = f[7](x)
        x = f[8](x)
        x = f[9](x)
        x = f[10](x)
        x = f[11](x)
        x = f[12](x)
        x = f[13](x)
        x = f[14](x)
        x = f[15](x)
        x = f[16](x)
        f4 = x
        return [f1, f2, f3, f4]

    def forward(self, x: Tensor) -> List[Tensor]:  # noqa: D102 - documented on the class
        if x.ndim == 5:
            b, t = x.shape[0], x.shape[1]
            return _unflatten(self.forward_single_frame(x.flatten(0, 1)), b, t)
        return self.forward_single_frame(x)


class ResNet50Encoder(ResNet):
    """torchvision ResNet-50 (Bottleneck ``[3, 4, 6, 3]``, ``replace_stride_with_dilation=[False, False, True]``,
    output stride 16) without ``avgpool``/``fc``; keys are torchvision's at the top level (``conv1``, ``bn1``,
    ``layer1``..``layer4``).

    Forward: ``x`` raw RGB in [0, 1] (**no** ImageNet normalisation, §1.2), ``(N, 3, H, W)`` or
    ``(B, T, 3, H, W)`` -> ``[f1, f2, f3, f4]``: relu(bn1(conv1)) before the maxpool (64 ch, /2), layer1
    (256 ch, /4), layer2 (512 ch, /8), layer4 (2048 ch, /16).

    Raises:
        CheckpointError: ``pretrained=True`` (no downloads).
    """

    def __init__(self, pretrained: bool = False) -> None:
        if pretrained:
            from .errors import CheckpointError

            raise CheckpointError(
                "pretrained_backbone=True would download the ImageNet weights resnet50-0676ba61.pth; this project "
                "never downloads: use pretrained_backbone=False and load an RVM checkpoint with "
                "model.rvm.load_checkpoint()")
        super().__init__(block=Bottleneck, layers=[3, 4, 6, 3], replace_stride_with_dilation=[False, False, True])
        del self.avgpool
        del self.fc

    def forward_single_frame(self, x: Tensor) -> List[Tensor]:
        """``x`` ``(N, 3, H, W)`` in [0, 1] -> ``[f1, f2, f3, f4]`` (see the class docstring)."""
        x = self.relu(self.bn1(self.conv1(x)))
        f1 = x
        x = self.layer1(self.maxpool(x))
        f2 = x
        x = self.layer2(x)
        f3 = x
        x = self.layer4(self.layer3(x))
        f4 = x
        return [f1, f2, f3, f4]

    def forward(self, x: Tensor) -> List[Tensor]:  # noqa: D102 - documented on the class
        if x.ndim == 5:
            b, t = x.shape[0], x.shape[1]
            return _unflatten(self.forward_single_frame(x.flatten(0, 1)), b, t)
        return self.forward_single_frame(x)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MobileNetV3LargeEncoder", "ResNet50Encoder"]
