"""Modular addition `a + b mod p` in the "a b =" format: predict c at the '=' position."""

from __future__ import annotations

import torch

from hooked_bilinear.train.losses import Batch


def modular_addition(p: int = 113, train_fraction: float = 0.3, seed: int = 0) -> tuple[Batch, Batch]:
    """All p² pairs (a, b), split into train and test by a seeded shuffle.

    Tokens are `[a, b, p]` (token `p` is '='), so a model needs `d_vocab = p + 1` and `n_ctx >= 3`;
    the label `(a + b) % p` is predicted from the logits at the last position.

    Args:
        p: the modulus (113 in the grokking literature; any integer >= 2).
        train_fraction: fraction of the p² pairs in the training split (the rest is the test split).
        seed: seed of the split.

    Returns:
        `(train, test)`, each `{"tokens": int64 [n, 3], "labels": int64 [n]}`.

    Example:
        >>> train, test = modular_addition(p=5, train_fraction=0.4, seed=0)
        >>> train["tokens"].shape, test["tokens"].shape
        (torch.Size([10, 3]), torch.Size([15, 3]))
    """
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"p must be an integer >= 2, got {p!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    labels = (a + b) % p
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = round(train_fraction * p * p)
    if not 0 < n_train < p * p:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split for p={p}")
    train_idx, test_idx = order[:n_train], order[n_train:]
    return (
        {"tokens": tokens[train_idx], "labels": labels[train_idx]},
        {"tokens": tokens[test_idx], "labels": labels[test_idx]},
    )
