"""Input checks run at the model boundary, so bad input fails with a clear message, not deep in torch."""

from __future__ import annotations

import difflib
from typing import Iterable

import torch
from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import HookNameError, InputError


def check_tokens(tokens: Tensor, cfg: HookedBilinearConfig) -> Tensor:
    """Validate a token tensor and return it as int64 `[batch, pos]` on `cfg.device`.

    Raises:
        InputError: float/bool dtype, meta device, rank not 1 or 2, empty sequence, ids outside
            `[0, d_vocab)`, or more than `n_ctx` positions.
    """
    if not isinstance(tokens, Tensor):
        raise InputError(f"tokens must be a torch.Tensor (or a string with a tokenizer attached), got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise InputError(f"tokens must have an integer dtype, got {tokens.dtype}; token ids are indices into W_E")
    if tokens.device.type == "meta":
        raise InputError(f"tokens are on the meta device (shape {tuple(tokens.shape)}, no values); "
                         f"pass real token ids (the model is on {cfg.device})")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise InputError(f"tokens must have shape [batch, pos] or [pos], got shape {tuple(tokens.shape)}")
    batch, n = tokens.shape
    if batch == 0 or n == 0:
        raise InputError(f"tokens is empty (shape {tuple(tokens.shape)}); need at least one position")
    if n > cfg.n_ctx:
        raise InputError(f"tokens has shape {tuple(tokens.shape)} but n_ctx is {cfg.n_ctx}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= cfg.d_vocab:
        bad = lo if lo < 0 else hi
        raise InputError(f"token id {bad} is out of range [0, d_vocab={cfg.d_vocab})")
    return tokens.to(device=cfg.device, dtype=torch.long)


def check_residual(x: Tensor, cfg: HookedBilinearConfig, what: str = "residual") -> Tensor:
    """Validate a residual-stream tensor `[batch, pos, d_model]` of the model's dtype."""
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != cfg.d_model:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{what} must have shape [batch, pos, d_model={cfg.d_model}], got {shape}")
    if x.dtype != cfg.dtype:
        raise InputError(f"{what} has dtype {x.dtype} but the model computes in {cfg.dtype}")
    if x.device.type == "meta":
        raise InputError(f"{what} is on the meta device (no values); the model is on {cfg.device}")
    return x


def check_hook_names(names: Iterable[str], known: Iterable[str]) -> None:
    """Raise HookNameError naming the first unknown hook name and the closest known ones."""
    known = list(known)
    known_set = set(known)
    for name in names:
        if name not in known_set:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {close}?" if close else f"; see model.hook_dict.keys() ({len(known)} hooks)"
            raise HookNameError(f"unknown hook name {name!r}{hint}")
