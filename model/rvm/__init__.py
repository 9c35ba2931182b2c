"""RobustVideoMatting re-implemented from the spec (``shared/spec/rvm-model.md``), state_dict-compatible with
the official release (master branch semantics), plus the onnx-branch / TensorRT-recipe export behaviour.

Public API:

- :class:`MattingNetwork` (``model.rvm.matting``): the network, master ``forward`` semantics.
- :class:`RecurrentExport`, :class:`ResizeByFactor`, :func:`dynamic_axes`, :func:`input_names`
  (``model.rvm.export``): export wrapper (broadcast states, refiner always on, baked or runtime ratio).
- :func:`load_checkpoint` (``model.rvm.checkpoint``): strict load; FGF models drop ``refiner.*``.
- :func:`state_shapes`, :func:`zero_states`, :func:`validate_inputs` (``model.rvm.contract``).
- :func:`calibrate`, :func:`calibrated_model` (``model.rvm.calibration``): trained-looking random weights.
- :class:`CheckpointError`, :class:`InputContractError` (``model.rvm.errors``, torch-free).

Constants, errors and :func:`state_shapes` import without torch; everything else is imported on first
use (PEP 562), so ``from model.rvm import STATE_CHANNELS`` stays light.
"""

from .constants import NETWORK_STRIDE, PARAMETER_COUNTS, REFINERS, STATE_CHANNELS, STATE_DICT_ENTRIES, VARIANTS
from .contract import src_sm_size, state_shapes, validate_inputs, zero_states
from .errors import CheckpointError, InputContractError

_LAZY = {
    "MattingNetwork": ".matting",
    "Projection": ".matting",
    "resize_by_factor": ".matting",
    "MobileNetV3LargeEncoder": ".backbones",
    "ResNet50Encoder": ".backbones",
    "LRASPP": ".lraspp",
    "ConvGRU": ".decoder",
    "RecurrentDecoder": ".decoder",
    "DeepGuidedFilterRefiner": ".refiners",
    "FastGuidedFilterRefiner": ".refiners",
    "RecurrentExport": ".export",
    "MattingNetworkExport": ".export",
    "MattingNetworkScript": ".export",
    "ResizeByFactor": ".export",
    "OUTPUT_NAMES": ".export",
    "dynamic_axes": ".export",
    "input_names": ".export",
    "load_checkpoint": ".checkpoint",
    "read_state_dict": ".checkpoint",
    "calibrate": ".calibration",
    "calibrated_model": ".calibration",
    "load_sample_frames": ".calibration",
}


def __getattr__(name: str):
    """Import the torch modules on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'model.rvm' has no attribute {name!r}")


__all__ = [
    "NETWORK_STRIDE",
    "PARAMETER_COUNTS",
    "REFINERS",
    "STATE_CHANNELS",
    "STATE_DICT_ENTRIES",
    "VARIANTS",
    "CheckpointError",
    "InputContractError",
    "src_sm_size",
    "state_shapes",
    "validate_inputs",
    "zero_states",
    *_LAZY,
]
