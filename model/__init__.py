"""BackgroundMattingV2 re-implemented from the spec, checkpoint-compatible with the official release.

Public API: :class:`MattingBase`, :class:`MattingRefine`, :class:`MattingRefineTorchScript`,
:func:`load_checkpoint`, :func:`calibrated_model`.
"""

from .backbones import BACKBONES
from .matting import MattingBase, MattingRefine, MattingRefineTorchScript
from .refiner import CROP_METHODS, KERNEL_SIZES, REFINE_MODES, REPLACE_METHODS, Refiner

__all__ = [
    "BACKBONES",
    "CROP_METHODS",
    "KERNEL_SIZES",
    "REFINE_MODES",
    "REPLACE_METHODS",
    "MattingBase",
    "MattingRefine",
    "MattingRefineTorchScript",
    "Refiner",
]
