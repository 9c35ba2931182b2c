"""Exceptions of :mod:`model.bgmv2` (torch-free, so callers can catch them without importing torch).

Both derive from the model-agnostic bases in :mod:`model.errors` (``except model.errors.CheckpointError``
catches BGMv2's too)."""

from .. import errors as _base


class CheckpointError(_base.CheckpointError):
    """A checkpoint file that cannot be read or does not match the model. The message says why."""


class InputContractError(_base.InputContractError):
    """``src``/``bgr`` the model must not take: wrong dtype, channel count, shape or value range.

    The message names the offending value and what would be accepted (e.g. "src values span [0, 255];
    expected RGB in [0, 1]: divide 8-bit images by 255")."""


__all__ = ["CheckpointError", "InputContractError"]
