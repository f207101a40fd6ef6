"""The 8×8 handwritten digits of scikit-learn (1,797 images, bundled with sklearn, no download)."""

from __future__ import annotations

import torch

from hooked_bilinear.train.losses import Batch


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Batch, Batch]:
    """`sklearn.datasets.load_digits`, pixels scaled from [0, 16] to [0, 1], split by a seeded shuffle.

    Args:
        test_fraction: fraction of the 1,797 images held out.
        seed: seed of the split.

    Returns:
        `(train, test)`, each `{"images": float32 [n, 64], "labels": int64 [n]}`; reshape an image to
        (8, 8) to plot it.

    Raises:
        ImportError: scikit-learn is not installed (`pip install scikit-learn`).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits task needs scikit-learn: pip install scikit-learn") from e
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    images = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    n = labels.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return (
        {"images": images[train_idx], "labels": labels[train_idx]},
        {"images": images[test_idx], "labels": labels[test_idx]},
    )
