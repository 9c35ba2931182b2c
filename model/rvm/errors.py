"""Exceptions of :mod:`model.rvm` (torch-free, so callers can catch them without importing torch).

Both derive from the model-agnostic bases in :mod:`model.errors` (``except model.errors.CheckpointError``
catches RVM's too)."""

from .. import errors as _base


class CheckpointError(_base.CheckpointError):
    """A checkpoint that cannot be read or does not fit the model (missing, unexpected or mis-shaped keys),
    or a request for pretrained weights, which would need a download. The message says which and why."""


class InputContractError(_base.InputContractError):
    """An input the network must not take: ``src``, a recurrent state ``r1i``..``r4i`` or ``downsample_ratio``
    with the wrong shape, dtype or value range.

    The message names the offending input and what would be accepted, e.g. "r2i has shape [1, 16, 65, 84];
    expected [1, 20, 65, 84] or [1, 1, 1, 1]"."""


__all__ = ["CheckpointError", "InputContractError"]
