"""BackgroundMattingV2's I/O contract for exporters and runtimes (the model itself is ``model/``).

Inputs ``src``, ``bgr``: ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 4, in the model's dtype.
Outputs (in this order, the official ``MattingRefine.forward``): ``pha`` ``(B,1,H,W)``, ``fgr`` ``(B,3,H,W)``,
``pha_sm``/``fgr_sm``/``err_sm`` at the coarse size ``(H*backbone_scale, W*backbone_scale)`` and ``ref_sm``
``(B,1,H/4,W/4)`` (1 where a patch was refined).
"""

from __future__ import annotations

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
