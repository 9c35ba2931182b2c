"""The patch refiner of BackgroundMattingV2 (spec: bgmv2-model.md §2).

Differences from the official implementation, all deliberate:

* ``gather`` and ``scatter_element`` use the correct batch stride ``C*H*W`` (the official
  ``compute_pixel_indices`` omits ``C``, which is wrong for batch > 1, spec §2.8). All six
  crop x replace combinations therefore agree for any batch size.
* Index tensors are created on the input's device (the official ``arange`` calls are CPU-only).
* There is no Python ``if patches > 0`` branch: every op of the patch path accepts zero patches, so
  a traced graph is valid for any number of selected patches, and the output with no patches equals
  the plain bilinear upsample exactly as the official fallback branch does.
* ``roi_align`` runs on float32 features with float32 boxes. In float16 the official code casts boxes
  to half, which cannot hold the ``x - 0.5`` offsets above 1024 px (spec §6), so patches at HD/4K
  widths were sampled between pixels. Here fp16 crops are exact, like ``unfold`` and ``gather``.
* No in-place writes into views; the replace step is out-of-place (friendlier to exporters).
* The refinement map ``ref`` has ``err``'s dtype in every mode (the official thresholding mode
  returns float32 for fp16 models).

Mode-dependent settings (``mode``, ``sample_pixels``, ``threshold``, ``prevent_oversampling``) are
forward arguments so a TorchScript wrapper can change them after loading without ``prim::SetAttr``
(which breaks coremltools, field-notes row 5); kernel size and crop/replace methods are constants.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .constants import (  # noqa: F401 - re-exported
    CROP_METHODS,
    KERNEL_SIZES,
    PATCH_SELECTS,
    REFINE_MODES,
    REPLACE_METHODS,
    TENSORRT_TOPK_MAX,
)


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(allowed)}")


class Refiner(nn.Module):
    """Refines 4x4 full-resolution patches where the coarse error map is high.

    Args:
        mode: ``"sampling"`` (top ``sample_pixels // 16`` quarter-res cells by error),
            ``"thresholding"`` (cells with error > ``threshold``) or ``"full"`` (every pixel).
        sample_pixels: pixel budget of sampling mode (80,000 for HD, 320,000 for 4K).
        threshold: error threshold of thresholding mode, in [0, 1].
        kernel_size: 1 or 3 (conv kernel of all four convs; no padding).
        prevent_oversampling: in sampling mode, drop selected cells whose error is exactly 0.
        patch_crop_method: ``"unfold"``, ``"roi_align"`` or ``"gather"``.
        patch_replace_method: ``"scatter_nd"`` or ``"scatter_element"``.
        patch_select: ``"nonzero"`` (official: a 0/1 map, then ``torch.nonzero`` - a data-dependent
            number of patches) or ``"static"`` (not in the official code: the patch indices come straight
            from TopK, so every shape is fixed given H and W; see :meth:`select_static`). Both refine the
            same cells and give the same outputs (tests/test_static_refiner.py).
        max_patches: ``static`` thresholding only: at most this many cells are refined (TopK by error,
            then ``err > threshold``); equal to the official output whenever no more cells pass the
            threshold (the harness reports when the cap truncated).
        topk_step: ``static`` only: largest K of one TopK; larger selections are chained TopK steps
            (default 3840, TensorRT's TopK limit).

    Raises:
        ValueError: any argument outside the values listed above.
    """

    __constants__ = ["kernel_size", "patch_crop_method", "patch_replace_method", "patch_select", "max_patches",
                     "topk_step"]

    def __init__(
        self,
        mode: str = "sampling",
        sample_pixels: int = 80_000,
        threshold: float = 0.1,
        kernel_size: int = 3,
        prevent_oversampling: bool = True,
        patch_crop_method: str = "unfold",
        patch_replace_method: str = "scatter_nd",
        patch_select: str = "nonzero",
        max_patches: int = TENSORRT_TOPK_MAX,
        topk_step: int = TENSORRT_TOPK_MAX,
    ) -> None:
        super().__init__()
        _check_choice("refine_mode", mode, REFINE_MODES)
        _check_choice("refine_kernel_size", kernel_size, KERNEL_SIZES)
        _check_choice("refine_patch_crop_method", patch_crop_method, CROP_METHODS)
        _check_choice("refine_patch_replace_method", patch_replace_method, REPLACE_METHODS)
        _check_choice("refine_patch_select", patch_select, PATCH_SELECTS)
        if int(sample_pixels) < 16:
            raise ValueError(f"refine_sample_pixels={sample_pixels!r}; expected an integer >= 16")
        if int(max_patches) < 1 or int(topk_step) < 1:
            raise ValueError(f"refine_max_patches={max_patches!r}, refine_topk_step={topk_step!r}; expected integers >= 1")
        self.patch_select = patch_select
        self.max_patches = int(max_patches)
        self.topk_step = int(topk_step)
        self.mode = mode
        self.sample_pixels = int(sample_pixels)
        self.threshold = float(threshold)
        self.kernel_size = int(kernel_size)
        self.prevent_oversampling = bool(prevent_oversampling)
        self.patch_crop_method = patch_crop_method
        self.patch_replace_method = patch_replace_method

        k = self.kernel_size
        self.conv1 = nn.Conv2d(32 + 1 + 3 + 6, 24, k, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.conv2 = nn.Conv2d(24, 16, k, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16 + 6, 12, k, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = nn.Conv2d(12, 4, k, bias=True)
        self.relu = nn.ReLU(True)

    def forward(
        self,
        src: Tensor,
        bgr: Tensor,
        pha: Tensor,
        fgr: Tensor,
        err: Tensor,
        hid: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Refine with the module's own mode settings; see :meth:`refine`."""
        return self.refine(
            src, bgr, pha, fgr, err, hid, self.mode, self.sample_pixels, self.threshold, self.prevent_oversampling
        )

    def refine(
        self,
        src: Tensor,
        bgr: Tensor,
        pha: Tensor,
        fgr: Tensor,
        err: Tensor,
        hid: Tensor,
        mode: str,
        sample_pixels: int,
        threshold: float,
        prevent_oversampling: bool,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Refine the coarse prediction.

        Args:
            src, bgr: ``(B, 3, H, W)`` full-resolution inputs, H and W multiples of 4.
            pha: ``(B, 1, Hc, Wc)`` coarse alpha in [0, 1].
            fgr: ``(B, 3, Hc, Wc)`` coarse foreground *residual* (unclamped).
            err: ``(B, 1, Hc, Wc)`` coarse error in [0, 1].
            hid: ``(B, 32, Hc, Wc)`` hidden features (>= 0).
            mode, sample_pixels, threshold, prevent_oversampling: as in the constructor.

        Returns:
            ``pha (B, 1, H, W)`` unclamped refined alpha, ``fgr (B, 3, H, W)`` refined residual,
            ``ref (B, 1, H/4, W/4)`` the {0, 1} map of refined quarter-res cells (err's dtype).
        """
        H, W = src.shape[2], src.shape[3]
        Hh, Wh = H // 2, W // 2
        Hq, Wq = H // 4, W // 4
        srcbgr = torch.cat([src, bgr], dim=1)
        half = torch.cat([
            F.interpolate(torch.cat([hid, pha, fgr], dim=1), size=(Hh, Wh), mode="bilinear", align_corners=False),
            F.interpolate(srcbgr, size=(Hh, Wh), mode="bilinear", align_corners=False),
        ], dim=1)
        if mode == "full":
            return self._refine_full(src, srcbgr, half, H, W, Hq, Wq)

        err_q = F.interpolate(err, size=(Hq, Wq), mode="bilinear", align_corners=False)
        keep: Optional[Tensor] = None  # static only: which selected cells are really refined
        if self.patch_select == "static":
            b, i, j, keep, ref = self.select_static(err_q, mode, sample_pixels, threshold, prevent_oversampling)
        else:
            ref = self.select_refinement_regions(err_q, mode, sample_pixels, threshold, prevent_oversampling)
            idx = torch.nonzero(ref[:, 0])
            b, i, j = idx[:, 0], idx[:, 1], idx[:, 2]

        k3 = self.kernel_size == 3
        x = self.crop_patch(half, b, i, j, 2, 3 if k3 else 0)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        up = 8 if k3 else 4
        x = F.interpolate(x, size=(up, up), mode="nearest")
        y = self.crop_patch(srcbgr, b, i, j, 4, 2 if k3 else 0)
        x = self.relu(self.bn3(self.conv3(torch.cat([x, y], dim=1))))
        x = self.conv4(x)

        coarse = F.interpolate(torch.cat([pha, fgr], dim=1), size=(H, W), mode="bilinear", align_corners=False)
        if keep is not None:  # selected cells that must not be refined keep their upsampled values
            x = torch.where(keep.view(-1, 1, 1, 1), x, self.crop_patch(coarse, b, i, j, 4, 0))
        out = self.replace_patch(coarse, x, b, i, j)
        return out[:, :1], out[:, 1:], ref

    def _refine_full(
        self, src: Tensor, srcbgr: Tensor, half: Tensor, H: int, W: int, Hq: int, Wq: int
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Refine every pixel; ``half`` is ``(B, 42, H/2, W/2)`` = cat(hid, pha, fgr, src, bgr) at half res."""
        k3 = self.kernel_size == 3
        x = half
        if k3:
            x = F.pad(x, (3, 3, 3, 3))
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        if k3:
            x = F.interpolate(x, size=(H + 4, W + 4), mode="nearest")
            y = F.pad(srcbgr, (2, 2, 2, 2))
        else:
            x = F.interpolate(x, size=(H, W), mode="nearest")
            y = srcbgr
        x = self.relu(self.bn3(self.conv3(torch.cat([x, y], dim=1))))
        x = self.conv4(x)
        ref = torch.ones((src.shape[0], 1, Hq, Wq), dtype=src.dtype, device=src.device)
        return x[:, :1], x[:, 1:], ref

    @staticmethod
    def select_refinement_regions(
        err: Tensor, mode: str, sample_pixels: int, threshold: float, prevent_oversampling: bool
    ) -> Tensor:
        """Choose the quarter-resolution cells to refine.

        Args:
            err: ``(B, 1, Hq, Wq)`` error at quarter resolution, in [0, 1].

        Returns:
            ``(B, 1, Hq, Wq)`` map of 0/1 in ``err``'s dtype. Sampling mode marks the top
            ``sample_pixels // 16`` cells per image (ties broken by the backend), dropping cells with
            error exactly 0 when ``prevent_oversampling``; thresholding marks ``err > threshold``.
        """
        if mode == "sampling":
            B, _, Hq, Wq = err.shape
            flat = err.reshape(B, -1)
            top = flat.topk(sample_pixels // 16, dim=1, sorted=False).indices
            ref = torch.zeros_like(flat).scatter(1, top, torch.ones(top.shape, dtype=flat.dtype, device=flat.device))
            ref = ref.reshape(B, 1, Hq, Wq)
            if prevent_oversampling:
                ref = ref * (err > 0).to(err.dtype)
            return ref
        return (err > threshold).to(err.dtype)

    def select_static(
        self, err: Tensor, mode: str, sample_pixels: int, threshold: float, prevent_oversampling: bool
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The ``static`` selector: a fixed number of cells per image, with no NonZero.

        Args:
            err: ``(B, 1, Hq, Wq)`` error at quarter resolution, in [0, 1].

        Returns:
            ``b, i, j`` (``(B*K,)`` int64 cell coordinates), ``keep`` (``(B*K,)`` bool: refine this cell)
            and ``ref`` (``(B, 1, Hq, Wq)`` 0/1 map, equal to :meth:`select_refinement_regions`'s).
            Sampling: K = ``sample_pixels // 16``, the same TopK as the official selector (so the same
            cells); ``keep`` drops error-0 cells when ``prevent_oversampling``. Thresholding: K =
            ``max_patches`` cells by error, ``keep`` = error > ``threshold``. K is a constant of the graph;
            K above ``topk_step`` is selected by chained TopK (:func:`topk_chained`).
        """
        B, Hq, Wq = err.shape[0], err.shape[2], err.shape[3]
        flat = err.reshape(B, -1)
        k = sample_pixels // 16 if mode == "sampling" else self.max_patches
        vals, top = topk_chained(flat, k, self.topk_step)
        if mode == "sampling":
            keep = vals > 0 if prevent_oversampling else torch.ones_like(vals, dtype=torch.bool)
        else:
            keep = vals > threshold
        ref = torch.zeros_like(flat).scatter(1, top, keep.to(flat.dtype)).reshape(B, 1, Hq, Wq)
        b = torch.arange(B, device=err.device).view(B, 1).expand(B, k).reshape(-1)
        i = torch.div(top, Wq, rounding_mode="floor")
        j = (top - i * Wq).reshape(-1)  # not remainder: the dynamo ONNX exporter cannot translate
        i = i.reshape(-1)               # aten.remainder.Scalar with a symbolic divisor (torch 2.14)
        return b, i, j, keep.reshape(-1), ref

    def crop_patch(self, x: Tensor, b: Tensor, i: Tensor, j: Tensor, size: int, padding: int) -> Tensor:
        """Crop ``(P, C, O, O)`` windows, ``O = size + 2 * padding``, from ``x (B, C, H, W)``.

        Window ``n`` is ``x_padded[b[n], :, size*i[n] : size*i[n]+O, size*j[n] : size*j[n]+O]`` where
        ``x_padded`` is ``x`` zero-padded by ``padding`` on every side.
        """
        if padding != 0:
            x = F.pad(x, (padding, padding, padding, padding))
        O = size + 2 * padding
        if self.patch_crop_method == "unfold":
            w = x.permute(0, 2, 3, 1).unfold(1, O, size).unfold(2, O, size)
            return w[b, i, j]
        if self.patch_crop_method == "roi_align":
            dtype = x.dtype
            xf = x.float()
            bf, yf, xf0 = b.to(torch.float32), (i * size).to(torch.float32), (j * size).to(torch.float32)
            boxes = torch.stack([bf, xf0 - 0.5, yf - 0.5, xf0 + (O - 0.5), yf + (O - 0.5)], dim=1)
            out = torchvision.ops.roi_align(xf, boxes, O, 1.0, 1, False)
            return out.to(dtype)
        # gather
        C, Hp, Wp = x.shape[1], x.shape[2], x.shape[3]
        index = _pixel_indices(b, i, j, C, Hp, Wp, size, O, x.device)
        return torch.gather(x.reshape(-1), 0, index.reshape(-1)).reshape(-1, C, O, O)

    def replace_patch(self, x: Tensor, y: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
        """Return ``x (B, C, H, W)`` with ``x[b[n], :, 4i[n]:4i[n]+4, 4j[n]:4j[n]+4] = y[n]``.

        ``y`` is ``(P, C, 4, 4)``. The result is a new tensor; ``x`` is not modified.
        """
        B, C, H, W = x.shape
        if self.patch_replace_method == "scatter_nd":
            v = x.reshape(B, C, H // 4, 4, W // 4, 4).permute(0, 2, 4, 1, 3, 5)
            v = v.index_put((b, i, j), y)
            return v.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)
        index = _pixel_indices(b, i, j, C, H, W, 4, 4, x.device)
        return x.reshape(-1).scatter(0, index.reshape(-1), y.reshape(-1)).reshape(B, C, H, W)


def topk_chained(x: Tensor, k: int, step: int = TENSORRT_TOPK_MAX) -> Tuple[Tensor, Tensor]:
    """``x.topk(k, dim=1, sorted=False)`` as chained TopK calls of at most ``step`` each.

    Each step takes the top ``min(step, remaining)`` entries and masks them with -inf for the next, so the
    union is the top ``k`` set (up to the order of exactly equal values, which any TopK breaks as it
    likes). One call when ``k <= step``. ``x``: ``(B, N)`` with finite values, ``k <= N``.
    Returns ``(values, indices)``, both ``(B, k)``.
    """
    if k <= step:
        v, t = x.topk(k, dim=1, sorted=False)
        return v, t
    vals = []
    idxs = []
    left = k
    while left > 0:
        s = min(step, left)
        v, t = x.topk(s, dim=1, sorted=False)
        vals.append(v)
        idxs.append(t)
        left -= s
        if left > 0:
            x = x.scatter(1, t, torch.full_like(v, float("-inf")))
    return torch.cat(vals, dim=1), torch.cat(idxs, dim=1)


def _pixel_indices(
    b: Tensor, i: Tensor, j: Tensor, C: int, H: int, W: int, size: int, O: int, device: torch.device
) -> Tensor:
    """Flat indices ``(P, C, O, O)`` of window pixels in a contiguous ``(B, C, H, W)`` tensor.

    ``index[n, c, u, v] = b*C*H*W + c*H*W + (size*i + u)*W + (size*j + v)`` - with the batch stride
    ``C*H*W`` that the official helper gets wrong (spec §2.8).
    """
    base = b * (C * H * W) + (i * size) * W + j * size
    c = torch.arange(C, device=device).view(C, 1, 1) * (H * W)
    u = torch.arange(O, device=device).view(1, O, 1) * W
    v = torch.arange(O, device=device).view(1, 1, O)
    return base.view(-1, 1, 1, 1) + (c + u + v).unsqueeze(0)
