"""Torch CPU thread counts for small models.

Small models (the bundled zoo, toy trainings) run each op on tensors of a few thousand numbers.
Splitting such an op over a pool of intra-op threads costs more in synchronisation than it saves,
and on a machine whose cores are busy with other work a waiting thread can lose its core entirely.
Our own training loop therefore runs small models on one thread and restores the caller's setting
after. For a whole notebook session, `torch.set_num_threads(1)` is the one-line setting the tutorials
use (measured times in `tutorials/README.md`).

Example:
    >>> from hooked_bilinear.threads import num_threads
    >>> with num_threads(1):
    ...     pass  # small-model work here
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

SMALL_MODEL_PARAMS = 2_000_000  # at or below this many parameters a model counts as small


def is_small(model: nn.Module) -> bool:
    """True when `model` has at most `SMALL_MODEL_PARAMS` parameters."""
    return sum(p.numel() for p in model.parameters()) <= SMALL_MODEL_PARAMS


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads (None: leave the count alone), then restore it.

    Raises:
        ValueError: `n` is not a positive integer or None.
    """
    if n is None:
        yield
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the thread count must be a positive integer or None, got {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def threads_for(model: nn.Module, requested: Optional[int] = None) -> Optional[int]:
    """The thread count our loops use for `model`: `requested` if given, else 1 for a small model, else None."""
    if requested is not None:
        return requested
    return 1 if is_small(model) else None


__all__ = ["SMALL_MODEL_PARAMS", "is_small", "num_threads", "threads_for"]
