"""Training-time input noise: the dense Gaussian noise Pearce et al. train their image models with.

The noise is `x + ε · scale · std(x)` with `ε ~ N(0, 1)` per pixel and `std(x)` the standard deviation
of the whole batch (the authors' `Noise` module, scale 0.5 in [P] Table 1). It is drawn from a
private seeded generator, so training with it stays deterministic.
"""

from __future__ import annotations

import torch

from hooked_bilinear.train.losses import Batch, LossFn, default_loss


def input_noise_loss(scale: float, seed: int = 0, loss_fn: LossFn | None = None) -> LossFn:
    """A loss function that adds dense Gaussian noise to `batch["images"]` before `loss_fn`.

    Args:
        scale: noise standard deviation per pixel, in units of the batch's pixel std (0: no noise).
        seed: seed of the noise generator (one fresh draw per call, in order).
        loss_fn: the loss on the noisy batch (default `losses.default_loss`).

    Returns:
        `(model, batch) -> scalar loss`, for `train(..., loss_fn=...)`. Use it for training only:
        evaluate on clean images.

    Raises:
        ValueError: a negative `scale`.

    Example:
        >>> loss = input_noise_loss(0.5)
        >>> # train(model, train_set, loss_fn=loss, eval_data=test_set, ...)
    """
    if not scale >= 0:
        raise ValueError(f"noise scale must be >= 0, got {scale}")
    base = loss_fn or default_loss
    gen = torch.Generator().manual_seed(seed)

    def noisy(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if "images" not in batch:
            raise KeyError(f"input noise needs a batch with 'images'; got keys {sorted(batch)}")
        images = batch["images"]
        if scale > 0:
            eps = torch.randn(images.shape, generator=gen).to(images)
            images = images + eps * (scale * images.std())
        return base(model, {**batch, "images": images})

    return noisy


__all__ = ["input_noise_loss"]
