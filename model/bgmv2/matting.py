"""MattingBase and MattingRefine (spec: bgmv2-model.md §1), checkpoint-compatible with the official
BackgroundMattingV2 release: same constructor signatures, output tuples and state_dict keys."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import BACKBONES, build_backbone, feature_channels
from .decoder import Decoder, build_aspp
from .errors import InputContractError
from .refiner import Refiner

#: How far outside [0, 1] src/bgr values may lie before the eager guard refuses them: a bilinear
#: resize or a colour conversion of a [0, 1] image overshoots by a few 1e-3 at most.
RANGE_MARGIN = 0.01


def _check_inputs(src: Tensor, bgr: Tensor) -> None:
    if src.shape != bgr.shape:
        raise ValueError(
            "src and bgr must have the same shape, got src " + str(list(src.shape)) + " and bgr " + str(list(bgr.shape))
        )
    if src.dim() != 4 or src.shape[1] != 3:
        raise ValueError("src and bgr must be (B, 3, H, W) RGB tensors, got shape " + str(list(src.shape)))
    if src.shape[2] % 4 != 0 or src.shape[3] % 4 != 0:
        raise ValueError(
            "height and width must be multiples of 4, got H="
            + str(src.shape[2]) + " W=" + str(src.shape[3])
            + " (pad or resize the inputs, e.g. the harness's --pad option)"
        )


def _span(x: Tensor) -> str:
    lo, hi = torch.aminmax(x.detach().float())
    return f"[{lo.item():.4g}, {hi.item():.4g}]"


@torch.jit.unused
def check_input_values(src: Tensor, bgr: Tensor, weight_dtype: torch.dtype) -> None:
    """Eager entry-point guard (never part of an exported graph): float dtype equal to the weights',
    finite values in [0, 1] within :data:`RANGE_MARGIN`.

    Args:
        src, bgr: ``(B, 3, H, W)`` tensors.
        weight_dtype: the model's parameter dtype (float32 or float16).

    Raises:
        InputContractError: naming the dtype or the value span and the usual fix (0-255 images: divide
            by 255; [-1, 1] tensors: ``(x + 1) / 2``; BGR order cannot be detected and is not checked).
    """
    for name, x in (("src", src), ("bgr", bgr)):
        if not torch.is_floating_point(x):
            raise InputContractError(
                f"{name} is {str(x.dtype).replace('torch.', '')}; expected float RGB in [0, 1] of the model's "
                f"dtype {str(weight_dtype).replace('torch.', '')} (e.g. {name}.float() / 255 for 8-bit images)")
        if x.dtype != weight_dtype:
            raise InputContractError(
                f"{name} is {str(x.dtype).replace('torch.', '')} but the model's weights are "
                f"{str(weight_dtype).replace('torch.', '')}; convert the input ({name}.to(model dtype)) or the model")
    for name, x in (("src", src), ("bgr", bgr)):
        if x.numel() == 0:
            raise InputContractError(f"{name} is empty (shape {list(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            raise InputContractError(f"{name} contains NaN or Inf; expected finite RGB values in [0, 1]")
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        if lo < -RANGE_MARGIN or hi > 1.0 + RANGE_MARGIN:
            if hi > 2.0 and lo >= -RANGE_MARGIN:
                hint = "this looks like 0-255 pixel values: divide by 255"
            elif lo < -RANGE_MARGIN and hi <= 1.0 + RANGE_MARGIN:
                hint = "this looks like [-1, 1] normalised values: use (x + 1) / 2"
            else:
                hint = "undo any mean/std normalisation"
            raise InputContractError(
                f"{name} values span {_span(x)}; expected RGB in [0, 1] (margin {RANGE_MARGIN}): {hint}")


def _fail_unless_zero(x: Tensor, bad: Tensor) -> Tensor:
    """``x`` reshaped to ``[B, C * (1 + bad), H * (1 + bad), W]``: its own shape when the int64 scalar
    ``bad`` is 0, otherwise a Reshape every runtime must refuse. The shape is computed at run time, so
    no optimiser can fold it away: onnxruntime drops a multiplication by a reshaped constant, and turns a
    single computed dimension into -1 (which always succeeds); two computed dimensions it must keep."""
    shape = torch._shape_as_tensor(x)
    return x.reshape(shape[0], shape[1] * (bad + 1), shape[2] * (bad + 1), shape[3])


def _check_range_scripted(src: Tensor, bgr: Tensor, margin: float) -> None:
    """The value-range half of ``input_guard`` inside a TorchScript artifact (which already refuses H/W
    not multiples of 4 through :func:`_check_inputs`): raises ValueError for values outside [0, 1]."""
    lo = float(torch.minimum(src.min(), bgr.min()))
    hi = float(torch.maximum(src.max(), bgr.max()))
    if lo < -margin or hi > 1.0 + margin:
        raise ValueError("input_guard: src/bgr values span [" + str(lo) + ", " + str(hi)
                         + "]; expected RGB in [0, 1] (0-255 images: divide by 255)")


class _ShapeGuard(nn.Module):
    """In-graph check (export option ``input_guard``): H and W multiples of 4, else the graph fails.

    ONNX has no assert operator, so the check is a Reshape of ``src`` to ``[B, 3k, H k, W]`` with ``k = 1 + H%4 + W%4``,
    which every runtime refuses unless both remainders are 0 (:func:`_fail_unless_zero`); the attribute name puts
    ``input_guard_hw_multiple_of_4`` into the failing node's name and hence into the runtime's error."""

    def forward(self, src: Tensor) -> Tensor:  # noqa: D102
        return _fail_unless_zero(src, torch.remainder(torch._shape_as_tensor(src)[2:], 4).sum())


class _RangeGuard(nn.Module):
    """In-graph check (export option ``input_guard``): src/bgr values within [0, 1] +- RANGE_MARGIN, else
    a Reshape of ``src`` to twice its height fails (node name ``input_guard_values_in_0_1``); costs one min/max reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.margin = float(RANGE_MARGIN)

    def forward(self, src: Tensor, bgr: Tensor) -> Tensor:  # noqa: D102
        lo = torch.minimum(src.min(), bgr.min())
        hi = torch.maximum(src.max(), bgr.max())
        bad = ((lo < -self.margin) | (hi > 1.0 + self.margin)).to(torch.int64)
        return _fail_unless_zero(src, bad)


class Base(nn.Module):
    """Backbone -> ASPP -> decoder. ``forward(x (B, in_channels, H, W)) -> (B, out_channels, H, W)``."""

    def __init__(self, backbone: str, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r} is not supported; expected one of {list(BACKBONES)}")
        fc = feature_channels(backbone)
        self.backbone = build_backbone(backbone, in_channels)
        self.aspp = build_aspp(fc[0])
        self.decoder = Decoder([256, 128, 64, 48, out_channels], [fc[1], fc[2], fc[3], in_channels])

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.encode_decode(x)

    def encode_decode(self, x: Tensor) -> Tensor:
        """Backbone -> ASPP -> decoder on ``x (B, in_channels, H, W)``."""
        x4, x3, x2, x1, x0 = self.backbone(x)
        return self.decoder(self.aspp(x4), x3, x2, x1, x0)


class MattingBase(Base):
    """Coarse matting network at the input resolution.

    ``forward(src, bgr)`` with ``src``/``bgr`` ``(B, 3, H, W)`` RGB in [0, 1] (float32 or float16),
    H and W multiples of 4. Returns ``pha (B,1,H,W)`` in [0, 1], ``fgr (B,3,H,W)`` in [0, 1],
    ``err (B,1,H,W)`` in [0, 1] and ``hid (B,32,H,W)`` >= 0.

    Raises:
        ValueError: unknown backbone; src/bgr shapes differ or H/W not multiples of 4.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__(backbone, in_channels=6, out_channels=1 + 3 + 1 + 32)

    def forward(self, src: Tensor, bgr: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: D102
        _check_inputs(src, bgr)
        x = self.encode_decode(torch.cat([src, bgr], dim=1))
        pha = x[:, 0:1].clamp(0.0, 1.0)
        fgr = (x[:, 1:4] + src).clamp(0.0, 1.0)
        err = x[:, 4:5].clamp(0.0, 1.0)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid


class MattingRefine(MattingBase):
    """Coarse network at ``backbone_scale`` plus the patch refiner (the deployable BMV2 model).

    Args:
        backbone: ``"mobilenetv2"``, ``"resnet50"`` or ``"resnet101"``.
        backbone_scale: downsampling of the coarse pass, in (0, 0.5] (0.25 for HD, 0.125 for 4K).
        refine_mode, refine_sample_pixels, refine_threshold, refine_kernel_size,
        refine_prevent_oversampling, refine_patch_crop_method, refine_patch_replace_method,
        refine_patch_select, refine_max_patches, refine_topk_step:
            see :class:`model.refiner.Refiner` (the last three are not in the official API:
            ``refine_patch_select="static"`` is the export-friendly selector of issue 14).

    ``forward(src, bgr)`` with ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 4, returns
    ``pha (B,1,H,W)``, ``fgr (B,3,H,W)``, ``pha_sm (B,1,Hc,Wc)``, ``fgr_sm (B,3,Hc,Wc)``,
    ``err_sm (B,1,Hc,Wc)``, ``ref_sm (B,1,H/4,W/4)`` with ``Hc = floor(H * backbone_scale)``.

    ``input_guard`` (not in the official API; off by default): exported graphs refuse inputs whose H or W
    is not a multiple of 4 or whose values leave [0, 1] (see :class:`_ShapeGuard`), instead of returning
    wrong mattes silently. Eager calls are always checked (:func:`check_input_values`).

    Raises:
        InputContractError: (eager) non-float dtype, dtype unlike the weights', NaN/Inf, values outside [0, 1].
        ValueError: bad constructor argument; src/bgr shapes differ; H or W not a multiple of 4;
            sampling mode asking for more patches (``refine_sample_pixels // 16``) than the image has
            quarter-resolution cells (``H/4 * W/4``; official issue #172).
    """

    def __init__(
        self,
        backbone: str,
        backbone_scale: float = 1 / 4,
        refine_mode: str = "sampling",
        refine_sample_pixels: int = 80_000,
        refine_threshold: float = 0.1,
        refine_kernel_size: int = 3,
        refine_prevent_oversampling: bool = True,
        refine_patch_crop_method: str = "unfold",
        refine_patch_replace_method: str = "scatter_nd",
        input_guard: bool = False,
        refine_patch_select: str = "nonzero",
        refine_max_patches: int = 3840,
        refine_topk_step: int = 3840,
    ) -> None:
        if not (0.0 < float(backbone_scale) <= 0.5):
            raise ValueError(f"backbone_scale={backbone_scale!r}; expected a float in (0, 0.5]")
        super().__init__(backbone)
        self.backbone_scale = float(backbone_scale)
        self.refiner = Refiner(
            refine_mode,
            refine_sample_pixels,
            refine_threshold,
            refine_kernel_size,
            refine_prevent_oversampling,
            refine_patch_crop_method,
            refine_patch_replace_method,
            refine_patch_select,
            refine_max_patches,
            refine_topk_step,
        )
        self.input_guard = bool(input_guard)
        self.range_margin = float(RANGE_MARGIN)
        if self.input_guard:  # no parameters: the state_dict stays the official one
            self.input_guard_hw_multiple_of_4 = _ShapeGuard()
            self.input_guard_values_in_0_1 = _RangeGuard()

    @torch.jit.unused
    def _guard(self, src: Tensor, bgr: Tensor) -> Tuple[Tensor, Tensor]:
        """Eager: :func:`check_input_values` always. While exporting with ``input_guard``: legacy ONNX
        (tracing) gets the in-graph shape and range checks; torch.export (dynamo ONNX, AOTInductor) gets
        ``torch._check`` on H and W (data-dependent range checks cannot be expressed there)."""
        compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
        if not (torch.jit.is_tracing() or compiling):
            check_input_values(src, bgr, self.refiner.conv1.weight.dtype)
            return src, bgr
        if not self.input_guard:
            return src, bgr
        if compiling:
            torch._check(src.shape[2] % 4 == 0, lambda: "input_guard: H must be a multiple of 4")
            torch._check(src.shape[3] % 4 == 0, lambda: "input_guard: W must be a multiple of 4")
            return src, bgr
        src = self.input_guard_hw_multiple_of_4(src)
        return self.input_guard_values_in_0_1(src, bgr), bgr

    def forward(  # type: ignore[override]
        self, src: Tensor, bgr: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Run with the module's own settings; see the class docstring."""
        return self.infer(
            src,
            bgr,
            self.backbone_scale,
            self.refiner.mode,
            self.refiner.sample_pixels,
            self.refiner.threshold,
            self.refiner.prevent_oversampling,
        )

    def infer(
        self,
        src: Tensor,
        bgr: Tensor,
        backbone_scale: float,
        refine_mode: str,
        refine_sample_pixels: int,
        refine_threshold: float,
        refine_prevent_oversampling: bool,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Forward pass with explicit runtime settings (used by the TorchScript wrapper)."""
        _check_inputs(src, bgr)
        if torch.jit.is_scripting():
            if self.input_guard:
                _check_range_scripted(src, bgr, self.range_margin)
        else:
            src, bgr = self._guard(src, bgr)
        if refine_mode not in ["sampling", "thresholding", "full"]:
            raise ValueError("refine_mode='" + refine_mode + "'; expected 'sampling', 'thresholding' or 'full'")
        if not (0.0 < backbone_scale <= 0.5):
            raise ValueError("backbone_scale=" + str(backbone_scale) + "; expected a float in (0, 0.5]")
        cells = (src.shape[2] // 4) * (src.shape[3] // 4)  # quarter-resolution cells
        if refine_mode == "sampling":
            if refine_sample_pixels // 16 > cells:
                raise ValueError(
                    "refine_sample_pixels=" + str(refine_sample_pixels) + " selects "
                    + str(refine_sample_pixels // 16) + " patches but a "
                    + str(src.shape[2]) + "x" + str(src.shape[3]) + " input has only " + str(cells)
                    + " quarter-resolution cells; use refine_sample_pixels <= H*W (" + str(cells * 16) + ")"
                )
        if refine_mode == "thresholding" and self.refiner.patch_select == "static":
            if self.refiner.max_patches > cells:
                raise ValueError(
                    "refine_max_patches=" + str(self.refiner.max_patches) + " exceeds the " + str(cells)
                    + " quarter-resolution cells of a " + str(src.shape[2]) + "x" + str(src.shape[3])
                    + " input; the static thresholding selector needs refine_max_patches <= H*W/16"
                )
        src_sm = F.interpolate(
            src, scale_factor=backbone_scale, mode="bilinear", align_corners=False, recompute_scale_factor=True
        )
        bgr_sm = F.interpolate(
            bgr, scale_factor=backbone_scale, mode="bilinear", align_corners=False, recompute_scale_factor=True
        )
        x = self.encode_decode(torch.cat([src_sm, bgr_sm], dim=1))
        pha_sm = x[:, 0:1].clamp(0.0, 1.0)
        fgr_sm = x[:, 1:4]
        err_sm = x[:, 4:5].clamp(0.0, 1.0)
        hid_sm = x[:, 5:].relu()
        pha, fgr, ref_sm = self.refiner.refine(
            src, bgr, pha_sm, fgr_sm, err_sm, hid_sm,
            refine_mode, refine_sample_pixels, refine_threshold, refine_prevent_oversampling,
        )
        pha = pha.clamp(0.0, 1.0)
        fgr = (fgr + src).clamp(0.0, 1.0)
        fgr_sm = (src_sm + fgr_sm).clamp(0.0, 1.0)
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm


class MattingRefineTorchScript(nn.Module):
    """Scriptable wrapper whose runtime settings can be changed after ``torch.jit.load``.

    Holds ``self.model`` (a :class:`MattingRefine`, hence state_dict keys prefixed ``model.`` like the
    official ``export_torchscript.py``) and hoists ``backbone_scale`` (float), ``refine_mode`` (str),
    ``refine_sample_pixels`` (int), ``refine_threshold`` (float) and ``refine_prevent_oversampling``
    (bool) to top-level attributes (spec §4.2). Unlike the official wrapper, forward passes them as
    arguments instead of writing them into submodules, so the scripted graph has no ``prim::SetAttr``.
    Crop/replace methods and kernel size are frozen at scripting time.

    Example::

        ts = torch.jit.script(MattingRefineTorchScript(model))
        ts.save("bmv2.pt"); ts = torch.jit.load("bmv2.pt")
        ts.refine_mode = "thresholding"; ts.backbone_scale = 0.125
    """

    def __init__(self, model: MattingRefine) -> None:
        super().__init__()
        self.model = model
        self.backbone_scale = float(model.backbone_scale)
        self.refine_mode = str(model.refiner.mode)
        self.refine_sample_pixels = int(model.refiner.sample_pixels)
        self.refine_threshold = float(model.refiner.threshold)
        self.refine_prevent_oversampling = bool(model.refiner.prevent_oversampling)

    def forward(
        self, src: Tensor, bgr: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Same inputs and outputs as :meth:`MattingRefine.forward`, using the hoisted settings."""
        return self.model.infer(
            src,
            bgr,
            self.backbone_scale,
            self.refine_mode,
            self.refine_sample_pixels,
            self.refine_threshold,
            self.refine_prevent_oversampling,
        )
