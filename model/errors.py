"""Exceptions shared by every model package (torch-free, so the harness can catch them without importing torch
or naming a model).

Every error about what a caller gave a model (a checkpoint file or state_dict, an input tensor) is a
:class:`ModelInputError`; each model package derives its own ``CheckpointError``/``InputContractError`` from
:class:`CheckpointError`/:class:`InputContractError` here, so ``except model.errors.CheckpointError`` catches
every model's, and ``except model.bgmv2.errors.CheckpointError`` only BGMv2's.
"""


class ModelInputError(ValueError):
    """Something given to a model that it must not take. The message names the offending value and what would
    be accepted (the harness prints it and exits 2)."""


class CheckpointError(ModelInputError):
    """A checkpoint that cannot be read (missing, empty, a Git LFS pointer, text, a zip without ``data.pkl``,
    pickled code, truncated) or does not fit the model (another model's weights, missing, unexpected or
    mis-shaped keys, non-finite values). The message says which and what would be accepted."""


class InputContractError(ModelInputError):
    """An input tensor the network must not take: wrong dtype, channel count, shape or value range. The message
    names the input and what would be accepted."""


__all__ = ["CheckpointError", "InputContractError", "ModelInputError"]
