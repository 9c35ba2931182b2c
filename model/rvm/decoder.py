"""Recurrent decoder of RobustVideoMatting: ConvGRU, its blocks and the decoder (spec: rvm-model.md §1.4).

Every module accepts 4D ``(N, C, H, W)`` frames or 5D ``(B, T, C, H, W)`` clips. Non-recurrent layers
flatten time into the batch; the ConvGRU loops over T and returns the last step's state. Recurrent states
are always 4D ``(N, c, h, w)`` and lie in [-1, 1].
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


class ConvGRU(nn.Module):
    """Convolutional GRU (kernel 3, padding 1, biased convs), master update rule (§1.4).

    ``[r, z] = split(sigmoid(ih([x, h])))``, ``c~ = tanh(hh([x, r * h]))``, **``h' = (1 - z) * h + z * c~``**;
    the block output is ``h'``. (PR #250 swaps the roles of z; the released weights use this rule.)

    Keys: ``ih.0`` (Conv 2c->2c), ``hh.0`` (Conv 2c->c).

    Args:
        channels: ``c``, channels of both the input and the state.

    Forward ``(x, h, broadcast_state=False)``:
        x: ``(N, c, H, W)`` or ``(B, T, c, H, W)``.
        h: state ``(N, c, H, W)``; None means zeros of that shape (N = batch, spatial size from ``x``).
        broadcast_state: expand ``h`` to the shape of one frame of ``x`` first (``h.expand_as(x)``), so a
            ``[1, 1, 1, 1]`` zero state works: the official ONNX contract, used only by the export wrapper.

    Returns ``(out, h')``: ``out`` with ``x``'s shape (all T steps for 5D), ``h'`` the last step's state, 4D.
    """

    def __init__(self, channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, kernel_size, padding=padding), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, kernel_size, padding=padding), nn.Tanh())

    def forward_single_frame(self, x: Tensor, h: Tensor) -> Tuple[Tensor, Tensor]:
        """One step on ``(N, c, H, W)`` ``x`` and ``h`` -> ``(h', h')``."""
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        h = (1 - z) * h + z * c
        return h, h

    def forward_time_series(self, x: Tensor, h: Tensor) -> Tuple[Tensor, Tensor]:
        """Loop over T of ``(B, T, c, H, W)`` ``x`` -> ``(stacked outputs, last state)``."""
        outs: List[Tensor] = []
        for xt in x.unbind(dim=1):
            ot, h = self.forward_single_frame(xt, h)
            outs.append(ot)
        return torch.stack(outs, dim=1), h

    def forward(  # noqa: D102 - documented on the class
        self, x: Tensor, h: Optional[Tensor], broadcast_state: bool = False
    ) -> Tuple[Tensor, Tensor]:
        if h is None:
            h = torch.zeros((x.size(0), x.size(-3), x.size(-2), x.size(-1)), device=x.device, dtype=x.dtype)
        elif broadcast_state:
            h = h.expand_as(x[:, 0]) if x.ndim == 5 else h.expand_as(x)
        if x.ndim == 5:
            return self.forward_time_series(x, h)
        return self.forward_single_frame(x, h)


class BottleneckBlock(nn.Module):
    """``decode4``: split ``f4`` into channel halves ``[a, b]``, ConvGRU(C/2) on ``b``, concat (no conv).

    Args:
        channels: C, the LRASPP width (128 mobilenetv3, 256 resnet50).

    Forward ``(x, r, broadcast_state=False)``: ``x`` ``(N, C, h, w)`` or ``(B, T, C, h, w)`` -> ``(x4, r4)``
    with ``x4`` shaped like ``x`` and ``r4`` ``(N, C/2, h, w)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(  # noqa: D102 - documented on the class
        self, x: Tensor, r: Optional[Tensor], broadcast_state: bool = False
    ) -> Tuple[Tensor, Tensor]:
        a, b = x.split(self.channels // 2, dim=-3)
        b, r = self.gru(b, r, broadcast_state)
        return torch.cat([a, b], dim=-3), r


class UpsamplingBlock(nn.Module):
    """``decode3``/``decode2``/``decode1``: x2 bilinear upsample (align_corners=False), top-left crop to the
    skip's size (handles odd sizes), concat ``[x, f, s]``, Conv3x3/BN/ReLU, ConvGRU on the second channel half.

    Keys: ``conv.0`` (Conv3x3 in+skip+src -> out, no bias), ``conv.1`` (BN), ``gru.ih.0``, ``gru.hh.0``.

    Args:
        in_channels, skip_channels, src_channels, out_channels: channel counts (src is 3).

    Forward ``(x, f, s, r, broadcast_state=False)``: ``x`` at half the resolution of the skip ``f`` and the
    pooled source ``s``; all 4D or all 5D. Returns ``(out, r')``: ``out`` with ``out_channels`` at ``s``'s
    size, ``r'`` ``(N, out/2, h, w)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels + src_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )
        self.gru = ConvGRU(out_channels // 2)

    def _merge(self, x: Tensor, f: Tensor, s: Tensor) -> Tensor:
        x = self.upsample(x)
        x = x[:, :, : s.size(2), : s.size(3)]
        return self.conv(torch.cat([x, f, s], dim=1))

    def forward(  # noqa: D102 - documented on the class
        self, x: Tensor, f: Tensor, s: Tensor, r: Optional[Tensor], broadcast_state: bool = False
    ) -> Tuple[Tensor, Tensor]:
        if x.ndim == 5:
            b, t = s.shape[0], s.shape[1]
            x = self._merge(x.flatten(0, 1), f.flatten(0, 1), s.flatten(0, 1)).unflatten(0, (b, t))
            dim = 2
        else:
            x = self._merge(x, f, s)
            dim = 1
        a, g = x.split(self.out_channels // 2, dim=dim)
        g, r = self.gru(g, r, broadcast_state)
        return torch.cat([a, g], dim=dim), r


class OutputBlock(nn.Module):
    """``decode0``: x2 upsample, crop to ``s0``, concat ``[x, s0]``, (Conv3x3/BN/ReLU) x 2, no biases.

    Keys: ``conv.0``, ``conv.1`` (BN), ``conv.3``, ``conv.4`` (BN).

    Forward ``(x, s)``: ``x`` ``(N, in, ceil(h/2), ceil(w/2))``, ``s`` ``(N, 3, h, w)`` (or 5D) -> ``hid``
    ``(N, out, h, w)`` (or 5D), ReLU output >= 0.
    """

    def __init__(self, in_channels: int, src_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels + src_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )

    def forward_single_frame(self, x: Tensor, s: Tensor) -> Tensor:
        """4D ``x``, ``s`` -> 4D ``hid``."""
        x = self.upsample(x)
        x = x[:, :, : s.size(2), : s.size(3)]
        return self.conv(torch.cat([x, s], dim=1))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        if x.ndim == 5:
            b, t = s.shape[0], s.shape[1]
            return self.forward_single_frame(x.flatten(0, 1), s.flatten(0, 1)).unflatten(0, (b, t))
        return self.forward_single_frame(x, s)


class RecurrentDecoder(nn.Module):
    """Decoder with four ConvGRUs (§1.4).

    Args:
        feature_channels: channels of ``f1, f2, f3, f4`` (f4 after the LRASPP): mobilenetv3 ``[16, 24, 40,
            128]``, resnet50 ``[64, 256, 512, 256]``.
        decoder_channels: outputs of decode3, decode2, decode1, decode0: ``[80, 40, 32, 16]`` / ``[128, 64,
            32, 16]``.

    Forward ``(s0, f1, f2, f3, f4, r1, r2, r3, r4, broadcast_state=False)``:
        s0: ``src_sm``, RGB ``(N, 3, h, w)`` or ``(B, T, 3, h, w)``.
        f1..f4: features at strides 2, 4, 8, 16 (iterated ceil-halvings of h, w), same rank as ``s0``.
        r1..r4: states or None (zeros); r_k is ``(N, c_k, ceil(h/2^k), ceil(w/2^k))`` with c_k = half of the
            block width (mobilenetv3 16/20/40/64, resnet50 16/32/64/128).

    Returns ``[hid, r1', r2', r3', r4']``: ``hid`` 16 channels at ``s0``'s size, states 4D in [-1, 1].
    The three source pyramids s1..s3 come from ``avgpool`` (2x2, stride 2, ceil_mode, count_include_pad=False).
    """

    def __init__(self, feature_channels: List[int], decoder_channels: List[int]) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)
        self.decode4 = BottleneckBlock(feature_channels[3])
        self.decode3 = UpsamplingBlock(feature_channels[3], feature_channels[2], 3, decoder_channels[0])
        self.decode2 = UpsamplingBlock(decoder_channels[0], feature_channels[1], 3, decoder_channels[1])
        self.decode1 = UpsamplingBlock(decoder_channels[1], feature_channels[0], 3, decoder_channels[2])
        self.decode0 = OutputBlock(decoder_channels[2], 3, decoder_channels[3])

    def _pool(self, x: Tensor) -> Tensor:
        if x.ndim == 5:
            b, t = x.shape[0], x.shape[1]
            return self.avgpool(x.flatten(0, 1)).unflatten(0, (b, t))
        return self.avgpool(x)

    def forward(  # noqa: D102 - documented on the class
        self,
        s0: Tensor,
        f1: Tensor,
        f2: Tensor,
        f3: Tensor,
        f4: Tensor,
        r1: Optional[Tensor],
        r2: Optional[Tensor],
        r3: Optional[Tensor],
        r4: Optional[Tensor],
        broadcast_state: bool = False,
    ) -> List[Tensor]:
        s1 = self._pool(s0)
        s2 = self._pool(s1)
        s3 = self._pool(s2)
        x4, r4o = self.decode4(f4, r4, broadcast_state)
        x3, r3o = self.decode3(x4, f3, s3, r3, broadcast_state)
        x2, r2o = self.decode2(x3, f2, s2, r2, broadcast_state)
        x1, r1o = self.decode1(x2, f1, s1, r1, broadcast_state)
        x0 = self.decode0(x1, s0)
        return [x0, r1o, r2o, r3o, r4o]


__all__ = ["BottleneckBlock", "ConvGRU", "OutputBlock", "RecurrentDecoder", "UpsamplingBlock"]
