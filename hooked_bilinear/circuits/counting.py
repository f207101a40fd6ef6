"""How many fully expanded path terms a model has (spec §2.3), computed before enumerating anything.

With c_l terms in resid(l, pre) and β = 1 where the bias leaves and ONE exist:

    mid_l = (1 + H) c_l + β,   k_l = mid_l + β,   pairs_l = k_l(k_l+1)/2 (unordered) or k_l² (ordered),
    c_{l+1} = mid_l + pairs_l + β

so log c_L grows like 2^L. Here β is per leaf kind and per layer (zero biases add no leaves).
"""

from __future__ import annotations

from typing import Sequence, Union

Flags = Union[bool, Sequence[bool]]


def _per_layer(flag: Flags, n_layers: int) -> list[bool]:
    if isinstance(flag, bool):
        return [flag] * n_layers
    flags = list(flag)
    if len(flags) != n_layers:
        raise ValueError(f"per-layer flags have length {len(flags)} but n_layers is {n_layers}")
    return flags


def count_paths(
    n_layers: int,
    n_heads: int,
    *,
    n_leaves: int = 2,
    bO: Flags = True,
    bout: Flags = True,
    one: Flags = True,
    attn_only: bool = False,
    ordered: bool = False,
    upto: int | None = None,
) -> int:
    """Number of fully expanded terms in the residual stream entering layer `upto` (default: the final one).

    Args:
        n_leaves: embedding leaves (2 for tok + learned pos, 1 for tok only).
        bO, bout, one: whether the b_O', b_out and ONE (MLP bias) leaves exist, for all or per layer.
        ordered: count ordered MLP pairs k² (the spec's reference enumeration) instead of k(k+1)/2.

    Example:
        >>> count_paths(1, 2, ordered=True)         # spec §2.3: 72 terms for L=1, H=2
        72
        >>> count_paths(3, 1, n_leaves=1, bO=False, bout=False, one=False)
        8645
    """
    upto = n_layers if upto is None else upto
    bO, bout, one = (_per_layer(f, n_layers) for f in (bO, bout, one))
    c = n_leaves
    for l in range(upto):
        mid = c * (1 + n_heads) + bO[l]
        if attn_only:
            c = mid
            continue
        k = mid + one[l]
        pairs = k * k if ordered else k * (k + 1) // 2
        c = mid + pairs + bout[l]
    return c


def count_engine_paths(table, upto: int) -> int:
    """`count_paths` for the leaves a concrete model has (a NodeTable's flags)."""
    return count_paths(
        table.n_layers, table.n_heads, n_leaves=1 + table.has_pos, bO=table.has_bO, bout=table.has_bout,
        one=table.has_one, attn_only=not table.has_mlp, upto=upto,
    )
