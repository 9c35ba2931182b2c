"""Exceptions of the model package (torch-free, so callers can catch them without importing torch)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match the model. The message says why."""


class InputContractError(ValueError):
    """``src``/``bgr`` the model must not take: wrong dtype, channel count, shape or value range.

    The message names the offending value and what would be accepted (e.g. "src values span [0, 255];
    expected RGB in [0, 1]: divide 8-bit images by 255")."""
