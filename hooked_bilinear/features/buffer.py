"""Activations streamed from a model in chunks, shuffled in a bounded buffer (never the whole corpus).

The buffer runs the model on `windows_per_chunk` token windows at a time (no grad, only the hooks it
needs), flattens [batch, pos] and keeps at most `buffer_size` activation rows; batches are drawn
uniformly from it and it is refilled when half is used, so memory is O(buffer_size · d).
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


def stream_activations(model, tokens: Tensor, names: list[str], windows_per_chunk: int = 32,
                       generator: Optional[torch.Generator] = None) -> Iterator[list[Tensor]]:
    """Endless chunks `[acts at names[0] [n, d], ...]` over `tokens [n_windows, pos]`, in a seeded random order."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] == 0:
        raise InputError(f"tokens must be a non-empty [n_windows, pos] tensor, got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    while True:
        order = torch.randperm(tokens.shape[0], generator=generator)
        for start in range(0, len(order), windows_per_chunk):
            batch = tokens[order[start:start + windows_per_chunk]]
            with torch.no_grad():
                _, cache = model.run_with_cache(batch, names_filter=list(names), return_type=None)
            yield [cache[n].reshape(-1, cache[n].shape[-1]).float() for n in names]


class ActivationBuffer:
    """Shuffled activation rows for `names` (one tensor per name, rows aligned), refilled from the model.

    Args:
        model: the hooked model.
        tokens: token windows `[n_windows, pos]`.
        names: hook names (the SAE input; a transcoder adds its target).
        buffer_size: rows held at once.
        windows_per_chunk: windows per forward pass.
        seed: seeds the window order and the row shuffles.
    """

    def __init__(self, model, tokens: Tensor, names: list[str], buffer_size: int = 32768,
                 windows_per_chunk: int = 32, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.names = list(names)
        self.buffer_size = buffer_size
        self.chunks = stream_activations(model, tokens, self.names, windows_per_chunk, self.generator)
        self.rows: list[Tensor] = []
        self.used = 0
        self._fill()

    def _fill(self) -> None:
        keep = [r[self.used:] for r in self.rows] if self.rows else None
        parts = [[k] for k in keep] if keep else [[] for _ in self.names]
        have = parts[0][0].shape[0] if keep else 0
        while have < self.buffer_size:
            chunk = next(self.chunks)
            for p, c in zip(parts, chunk):
                p.append(c)
            have += chunk[0].shape[0]
        perm = torch.randperm(have, generator=self.generator)[: self.buffer_size]
        self.rows = [torch.cat(p)[perm] for p in parts]
        self.used = 0

    def next(self, batch_size: int) -> list[Tensor]:
        """The next `batch_size` rows of each activation."""
        if self.used + batch_size > self.buffer_size // 2:
            self._fill()
        out = [r[self.used:self.used + batch_size] for r in self.rows]
        self.used += batch_size
        return out
