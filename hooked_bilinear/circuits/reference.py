"""What `PathDecomposition.check()` compares with: the target read off the real forward pass by plain indexing.

Deliberately independent of `Readout` (which turns a target into weights on the residual stream):
positions are taken as given (negative ones counted from the end of the input), token ids and
directions are read column by column, and nothing is sorted, one-hot encoded or folded. A mis-pairing
or a wrong weight in the readout therefore makes Σ terms differ from this value instead of cancelling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _ids(ids, batch: int, i: int, device) -> Tensor:
    """Token ids [batch] for the i-th target position: an int, [batch] ids, or column i of [batch, n_pos]."""
    t = torch.as_tensor(ids, device=device).long()
    if t.ndim == 0:
        return t.repeat(batch)
    return t if t.ndim == 1 else t[:, i]


def _row(u: Tensor, i: int, like: Tensor) -> Tensor:
    """The direction used at the i-th target position: u [D], [batch, D] or row i of [batch | 1, n_pos, D]."""
    u = u.to(device=like.device, dtype=like.dtype)
    return u[:, i] if u.ndim == 3 else u


def reference_output(target, out: Tensor, tokens: Tensor, n_input: Optional[int] = None) -> Tensor:
    """The decomposition's expected total, from the real output alone.

    Args:
        target: a `Target`, or None for the full output.
        out: the real forward pass's logits [batch, n, d_vocab] or residual stream [batch, n, d_model]
            (possibly trimmed to the first n positions the target needs).
        tokens: [batch, n] the input (for `next_token`).
        n_input: length of the untrimmed input, which negative positions count from (default n).

    Returns:
        `out` itself without a target, else [batch]: Σ over the target's positions, in the order given.
    """
    if target is None:
        return out
    batch, n = out.shape[0], out.shape[1]
    n_input = n if n_input is None else n_input
    rows = torch.arange(batch, device=out.device)
    if target.kind == "next_token":
        total = out.new_zeros(batch)
        for p in range(n - 1):
            total = total + out[rows, p, tokens[:, p + 1]]
        return total
    positions = [target.pos] if isinstance(target.pos, int) else list(target.pos)
    total = out.new_zeros(batch)
    for i, p in enumerate(positions):
        col = out[:, p + n_input if p < 0 else p]  # [batch, D]
        if target.kind == "logit":
            total = total + col[rows, _ids(target.a, batch, i, out.device)]
        elif target.kind == "logit_diff":
            total = total + col[rows, _ids(target.a, batch, i, out.device)] - col[rows, _ids(target.b, batch, i, out.device)]
        elif target.kind == "direction":
            total = total + (col * _row(target.u, i, col)).sum(-1)
        else:
            raise ValueError(f"no reference for target kind {target.kind!r}")
    return total
