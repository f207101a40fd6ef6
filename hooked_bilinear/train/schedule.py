"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr` (or constant)."""

from __future__ import annotations

import math

from hooked_bilinear.train.config import TrainConfig


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`.

    Warmup: `lr * (step + 1) / warmup_steps` for `step < warmup_steps`. Cosine:
    `min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2` with `t = (step - warmup) / (total - warmup - 1)`
    going from 0 at the first post-warmup step to 1 at the last step, so the last step uses `min_lr`.

    Example:
        >>> cfg = TrainConfig(steps=10, lr=1.0, min_lr=0.0, warmup_steps=0)
        >>> lr_at(0, 10, cfg), lr_at(9, 10, cfg)
        (1.0, 0.0)
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside [0, total_steps={total_steps})")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    decay_steps = total_steps - cfg.warmup_steps - 1
    if decay_steps <= 0:
        return cfg.lr
    t = (step - cfg.warmup_steps) / decay_steps
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
