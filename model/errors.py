"""Exceptions of the model package (torch-free, so callers can catch them without importing torch)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match the model. The message says why."""
