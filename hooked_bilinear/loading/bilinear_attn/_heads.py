"""`nn.Linear` weights of multi-head attention in our per-head, input-first layout (checkpoints.md §6)."""

from __future__ import annotations

from torch import Tensor


def per_head_in(weight: Tensor, n_heads: int) -> Tensor:
    """A q/k/v projection `[H·e, d]` (head = outer factor of H·e) as `W [H, d, e]`."""
    d = weight.shape[-1]
    return weight.view(n_heads, -1, d).transpose(1, 2)


def per_head_out(weight: Tensor, n_heads: int) -> Tensor:
    """The output projection `[d, H·e]` as `W_O [H, e, d]`."""
    d = weight.shape[0]
    return weight.view(d, n_heads, -1).permute(1, 2, 0)
