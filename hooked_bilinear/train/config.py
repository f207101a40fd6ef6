"""TrainConfig: every knob of the training loop in one small dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class TrainConfig:
    """Hyperparameters of `train`.

    Give exactly one of `steps` and `epochs`; an epoch is `ceil(n_examples / batch_size)` steps.

    Args:
        steps: number of optimiser steps.
        epochs: number of passes over the training data (needs a dataset, not a batch function).
        batch_size: examples per step; None means full batch.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decoupled weight decay, applied to parameters with >= 2 dims only
            (matrices and embeddings; biases and norm weights are not decayed).
        betas: AdamW betas.
        warmup_steps: linear warmup from 0 to `lr`.
        schedule: "cosine" (decay to `min_lr` after warmup) or "constant".
        min_lr: final learning rate of the cosine schedule.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        eval_every: evaluate every this many steps (and always after the last step); None: only at the end.
        checkpoint_dir: where checkpoints go (`<dir>/step_<n>` via `save_pretrained`).
        checkpoint_every: save every this many steps (and after the last step); needs `checkpoint_dir`.
        seed: seeds the batch order (a private `torch.Generator`); weights are seeded by the model config.
        progress: show a tqdm bar with the running loss.
        threads: torch intra-op threads during training, restored afterwards. None: one thread for
            a model of at most 2M parameters (faster for small models, see `hooked_bilinear.threads`),
            the caller's setting otherwise.
    """

    steps: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr: float = 0.0
    grad_clip: Optional[float] = None
    eval_every: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_every: Optional[int] = None
    seed: int = 0
    progress: bool = True
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"give exactly one of steps and epochs, got steps={self.steps}, epochs={self.epochs}")
        for name in ("steps", "epochs", "batch_size", "eval_every", "checkpoint_every", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        self.betas = tuple(self.betas)  # JSON round trips give lists

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (setting `steps` clears `epochs` and vice versa)."""
        if "steps" in changes and "epochs" not in changes:
            changes["epochs"] = None
        if "epochs" in changes and "steps" not in changes:
            changes["steps"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out
