"""Exceptions raised by hooked_bilinear; each message names the offending value and what was expected."""

from __future__ import annotations



class ConfigError(ValueError):
    """An invalid or inconsistent model configuration."""


class InputError(ValueError):
    """Model input of the wrong type, rank, range or length."""


class HookNameError(KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe, or does not match its config."""


class NotBilinearError(ValueError):
    """A bilinear-only operation applied to a layer with a gate activation (SwiGLU etc.)."""


class JobError(ValueError):
    """A sharded job (``hooked_bilinear.jobs``) given bad input, or an output folder it cannot use."""


__all__ = ["CheckpointError", "ConfigError", "HookNameError", "InputError", "JobError", "NotBilinearError"]
