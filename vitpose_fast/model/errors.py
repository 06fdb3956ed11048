"""Errors shared by the model package's modules (one home, so that checkpoint and hub need not import each other)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""
