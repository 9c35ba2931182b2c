"""BackgroundMattingV2's adapter: I/O contract, construction from a cell, references' selection rule.

Inputs ``src``, ``bgr``: ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 4, in the model's dtype.
Outputs (in this order, the official ``MattingRefine.forward``): ``pha`` ``(B,1,H,W)``, ``fgr`` ``(B,3,H,W)``,
``pha_sm``/``fgr_sm``/``err_sm`` at the coarse size ``(H*backbone_scale, W*backbone_scale)`` and ``ref_sm``
``(B,1,H/4,W/4)`` (1 where a patch was refined).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..config import NA
from . import ModelAdapter, register_model

INPUT_NAMES = ("src", "bgr")
OUTPUT_NAMES = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")
# Unique dim names per tensor size class (shared names across tensors of different size break
# TensorRT profiles and ORT's shape checks: field-notes T3, RVM #238).
DYNAMIC_AXES = {
    "src": {0: "batch", 2: "height", 3: "width"},
    "bgr": {0: "batch", 2: "height", 3: "width"},
    "pha": {0: "batch", 2: "height", 3: "width"},
    "fgr": {0: "batch", 2: "height", 3: "width"},
    "pha_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "fgr_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "err_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "ref_sm": {0: "batch", 2: "quarter_height", 3: "quarter_width"},
}


class BGMv2(ModelAdapter):
    """``MattingRefine`` built from a cell's fields and the profile's settings."""

    name = "bgmv2"
    input_names = INPUT_NAMES
    output_names = OUTPUT_NAMES
    dynamic_axes = DYNAMIC_AXES

    def model_kwargs(self, cell: Any, s: Any) -> Dict[str, Any]:
        """``MattingRefine`` constructor arguments of ``cell`` under settings ``s`` (full mode's ``n/a``
        crop/replace become the official defaults, which full mode never uses)."""
        return dict(
            backbone=cell.backbone,
            backbone_scale=s.backbone_scale,
            refine_mode=cell.refine_mode,
            refine_sample_pixels=s.refine_sample_pixels,
            refine_threshold=s.refine_threshold,
            refine_kernel_size=s.refine_kernel_size,
            refine_prevent_oversampling=s.refine_prevent_oversampling,
            refine_patch_crop_method="unfold" if cell.crop_method == NA else cell.crop_method,
            refine_patch_replace_method="scatter_nd" if cell.replace_method == NA else cell.replace_method,
            input_guard=cell.input_guard,
            refine_patch_select=cell.refine_patch_select,
            refine_max_patches=s.refine_max_patches,
            refine_topk_step=s.refine_topk_step,
        )

    def settings_fields(self) -> Dict[str, Any]:
        """The refiner settings every BGMv2 record carries (:meth:`harness.keys.CellKeys.base_record`)."""
        return {"backbone_scale": float, "refine_sample_pixels": int, "refine_threshold": float,
                "refine_kernel_size": int, "refine_prevent_oversampling": bool}

    def record_fields(self) -> Dict[str, Any]:
        """The selection-aware judge's fields (:func:`harness.verdict.record_fields`) and the static
        selector's ``patch_cap_truncated``."""
        from ..parity import JUDGED_OUTPUTS
        from ..verdict import record_fields

        return {**record_fields(JUDGED_OUTPUTS), "patch_cap_truncated": str}

    def construct(self, kwargs: Dict[str, Any]) -> Any:
        from model.bgmv2 import MattingRefine

        return MattingRefine(**kwargs)

    def torchscript_module(self, model: Any) -> Any:
        """:class:`model.bgmv2.MattingRefineTorchScript`: the refiner's settings hoisted to settable attributes."""
        from model.bgmv2 import MattingRefineTorchScript

        return MattingRefineTorchScript(model)

    def feeds(self, src: Any, bgr: Any) -> Dict[str, Any]:
        """Named feeds from the validation pair (``(B,3,H,W)`` tensors in the cell's dtype)."""
        return {"src": src, "bgr": bgr}

    def selection(self, cell: Any, s: Any):
        """How the cell's refiner selects cells (for the near-tie judge of :mod:`harness.parity`)."""
        from ..parity import Selection

        return Selection(cell.refine_mode, k=s.refine_sample_pixels // 16, threshold=s.refine_threshold,
                         prevent_oversampling=s.refine_prevent_oversampling)

    def cap_truncation(self, cell: Any, s: Any, ref32: Sequence[np.ndarray]) -> str:
        """For a static thresholding cell: why ``refine_max_patches`` cut the official selection ("" when it
        did not). ``ref32[5]`` is the official ``ref_sm`` (B, 1, H/4, W/4): its cells above the threshold."""
        if cell.refine_patch_select != "static" or cell.refine_mode != "thresholding":
            return ""
        counts = ref32[5].reshape(ref32[5].shape[0], -1).sum(axis=1).astype(int).tolist()
        cap = s.refine_max_patches
        over = [(k, n) for k, n in enumerate(counts) if n > cap]
        return "; ".join(f"refine_max_patches={cap} truncated image {k}: {n} cells above the threshold" for k, n in over)

    def official(self, cell: Any) -> Any:
        """The cell the reference is computed for: the official model (no static selector, no input guard),
        so a static or guarded cell passes only if it equals the official one."""
        import dataclasses

        return dataclasses.replace(cell, refine_patch_select="nonzero", input_guard=False)

    def judge(self, outs: List[np.ndarray], ref32: List[np.ndarray], ref_same: Optional[List[np.ndarray]], tol: Any,
              cell: Any, s: Any, crop_to: Optional[Any] = None):
        """The selection-aware verdict of :func:`harness.verdict.judge_outputs`."""
        from ..verdict import judge_outputs

        return judge_outputs(outs, ref32, ref_same, tol, self.selection(cell, s), cell.precision, crop_to)


ADAPTER = register_model(BGMv2())
