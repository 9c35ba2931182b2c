"""Feature encoders for BackgroundMattingV2, built on torchvision modules.

Both encoders take the 6-channel ``cat([src, bgr], dim=1)`` tensor (RGB in [0, 1], no mean/std
normalisation) of shape ``(B, 6, H, W)`` and return five feature maps ``(x4, x3, x2, x1, x0)`` at
strides 16, 8, 4, 2 and 1, where ``x0`` is the input itself. Module names (and therefore state_dict
keys) follow torchvision so official checkpoints load unchanged (spec: bgmv2-model.md §1.2, §3.1).
"""

from __future__ import annotations

from typing import List, Tuple

from torch import Tensor, nn
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import Bottleneck, ResNet

from .constants import BACKBONES  # noqa: F401 - re-exported

FeatureMaps = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


class ResNetEncoder(ResNet):
    """ResNet-50/101 encoder with output stride 16 (layer4 dilated).

    Taps: ``x1`` after conv1/bn1/relu (64 ch, /2), ``x2`` = layer1 (256 ch, /4), ``x3`` = layer2
    (512 ch, /8), ``x4`` = layer4 (2048 ch, /16). ``avgpool`` and ``fc`` are removed.

    Args:
        in_channels: channels of the input tensor (6 for src+bgr).
        variant: ``"resnet50"`` or ``"resnet101"``.

    Raises:
        ValueError: ``variant`` is not one of the two names above.
    """

    LAYERS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}
    def __init__(self, in_channels: int = 6, variant: str = "resnet101") -> None:
        if variant not in self.LAYERS:
            raise ValueError(f"variant={variant!r}; expected one of {sorted(self.LAYERS)}")
        super().__init__(
            block=Bottleneck,
            layers=self.LAYERS[variant],
            replace_stride_with_dilation=[False, False, True],
        )
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        del self.avgpool
        del self.fc

    def forward(self, x: Tensor) -> FeatureMaps:  # noqa: D102 - documented on the class
        x0 = x
        x = self.relu(self.bn1(self.conv1(x)))
        x1 = x
        x = self.layer1(self.maxpool(x))
        x2 = x
        x = self.layer2(x)
        x3 = x
        x = self.layer4(self.layer3(x))
        x4 = x
        return x4, x3, x2, x1, x0


class MobileNetV2Encoder(MobileNetV2):
    """MobileNetV2 (width 1.0) encoder with output stride 16.

    ``features[18]`` and the classifier are removed; ``features[14]``'s depthwise conv has stride 1
    and ``features[15..17]`` use dilation 2. Taps: ``x1`` = features[1] (16 ch, /2), ``x2`` =
    features[3] (24 ch, /4), ``x3`` = features[6] (32 ch, /8), ``x4`` = features[17] (320 ch, /16).

    Args:
        in_channels: channels of the input tensor (6 for src+bgr).
    """

    def __init__(self, in_channels: int = 6) -> None:
        super().__init__()
        self.features[0][0] = nn.Conv2d(in_channels, 32, kernel_size=3, stride=2, padding=1, bias=False)
        del self.features[18]
        del self.classifier
        self.features[14].conv[1][0].stride = (1, 1)
        for idx in (15, 16, 17):
            depthwise = self.features[idx].conv[1][0]
            depthwise.dilation = (2, 2)
            depthwise.padding = (2, 2)

    def forward(self, x: Tensor) -> FeatureMaps:  # noqa: D102 - documented on the class
        f = self.features
        x0 = x
        x = f[1](f[0](x))
        x1 = x
        x = f[3](f[2](x))
        x2 = x
        x = f[6](f[5](f[4](x)))
        x3 = x
        x = f[10](f[9](f[8](f[7](x))))
        x = f[13](f[12](f[11](x)))
        x = f[17](f[16](f[15](f[14](x))))
        x4 = x
        return x4, x3, x2, x1, x0




def build_backbone(name: str, in_channels: int = 6) -> nn.Module:
    """Return the encoder for ``name`` (one of :data:`BACKBONES`).

    Raises:
        ValueError: unknown backbone name.
    """
    if name == "mobilenetv2":
        return MobileNetV2Encoder(in_channels)
    if name in ("resnet50", "resnet101"):
        return ResNetEncoder(in_channels, variant=name)
    raise ValueError(f"backbone={name!r}; expected one of {list(BACKBONES)}")


def feature_channels(name: str) -> List[int]:
    """Channels of ``(x4, x3, x2, x1)`` for backbone ``name`` (x0 always has 6)."""
    return [320, 32, 24, 16] if name == "mobilenetv2" else [2048, 512, 256, 64]


__all__ = ["BACKBONES", "MobileNetV2Encoder", "ResNetEncoder", "build_backbone", "feature_channels"]
