"""BackgroundMattingV2 re-implemented from the spec, checkpoint-compatible with the official release.

Public API: :class:`MattingBase`, :class:`MattingRefine`, :class:`MattingRefineTorchScript`,
:func:`load_checkpoint`, :func:`calibrated_model`.
"""

from .constants import BACKBONES, CROP_METHODS, KERNEL_SIZES, REFINE_MODES, REPLACE_METHODS

_LAZY = {"MattingBase": ".matting", "MattingRefine": ".matting", "MattingRefineTorchScript": ".matting",
         "Refiner": ".refiner"}


def __getattr__(name: str):
    """Import the torch modules on first use (PEP 562), so ``from model.bgmv2 import BACKBONES`` is light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'model.bgmv2' has no attribute {name!r}")

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
