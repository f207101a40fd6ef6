"""The training loop: AdamW, warmup + cosine schedule, gradient clipping, evals, checkpoints."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import nn

from hooked_bilinear.train.config import TrainConfig
from hooked_bilinear.train.losses import Batch, LossFn, _num_examples, default_loss, evaluate
from hooked_bilinear.train.schedule import lr_at
from hooked_bilinear.threads import num_threads, threads_for

BatchFn = Callable[[torch.Generator, int], Batch]
EvalFn = Callable[[nn.Module, Batch], dict[str, float]]


@dataclass
class TrainHistory:
    """What happened during `train`.

    Attributes:
        train: one record per step: `{"step", "loss", "lr"}` (step counts from 1).
        evals: one record per evaluation: `{"step", **metrics}`.
        checkpoints: folders written by checkpointing, in order.
        elapsed_s: wall-clock seconds of the whole run.
    """

    train: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def final_eval(self) -> dict[str, float]:
        """The last evaluation record (empty when there was no eval data)."""
        return self.evals[-1] if self.evals else {}

    @property
    def losses(self) -> list[float]:
        """Training loss per step."""
        return [r["loss"] for r in self.train]

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "evals": self.evals, "checkpoints": self.checkpoints, "elapsed_s": self.elapsed_s}


def train(
    model: nn.Module,
    train_data: Union[Batch, BatchFn],
    *,
    config: Optional[TrainConfig] = None,
    eval_data: Optional[Batch] = None,
    loss_fn: Optional[LossFn] = None,
    eval_fn: Optional[EvalFn] = None,
    log: Optional[Callable[[dict[str, float]], None]] = None,
    **overrides: Any,
) -> TrainHistory:
    """Train `model` in place with AdamW and return its history.

    Works for `HookedBilinearTransformer` (batches with `tokens`, optionally `labels` or
    `loss_mask`) and `HookedBilinearMLP` (`images` + `labels`); see `hooked_bilinear.train.losses`.
    A small model (<= 2M parameters) trains on one torch thread unless `config.threads` says
    otherwise; the caller's thread count is restored afterwards (see `hooked_bilinear.threads`).

    Args:
        model: the model to train (its parameters are updated in place).
        train_data: a dict of tensors sharing their first axis (shuffled each epoch with a seeded
            generator), or a function `(generator, batch_size) -> batch` that samples fresh batches.
        config: a `TrainConfig`; keyword `overrides` (e.g. `steps=100, lr=3e-4`) replace its fields,
            or build one when `config` is None.
        eval_data: held-out data, evaluated every `eval_every` steps and after the last step.
        loss_fn: `(model, batch) -> scalar loss`; default `losses.default_loss`.
        eval_fn: `(model, eval_data) -> dict of metrics`; default `losses.evaluate` with `loss_fn`.
        log: called with every record (train steps and evals) as it is made.

    Returns:
        A `TrainHistory`.

    Raises:
        ValueError: an invalid config, or `epochs` with a batch function.

    Example:
        >>> from hooked_bilinear.train.tasks import modular_addition
        >>> train_set, test_set = modular_addition(p=7, train_fraction=0.5, seed=0)
        >>> hist = train(model, train_set, eval_data=test_set, steps=10, progress=False)  # doctest: +SKIP
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    loss_fn = loss_fn or default_loss
    if eval_fn is None:
        eval_fn = lambda m, d: evaluate(m, d, loss_fn)  # noqa: E731
    with num_threads(threads_for(model, config.threads)):
        return _train_loop(model, train_data, config, eval_data, loss_fn, eval_fn, log)


def _train_loop(model: nn.Module, train_data: Union[Batch, BatchFn], config: TrainConfig, eval_data: Optional[Batch],
                loss_fn: LossFn, eval_fn: EvalFn, log: Optional[Callable[[dict[str, float]], None]]) -> TrainHistory:
    """The loop of `train`, with the thread count already set."""
    generator = torch.Generator().manual_seed(config.seed)
    total_steps, batches = _batch_stream(train_data, config, generator)
    device = next(model.parameters()).device
    optimizer = _make_optimizer(model, config)
    history = TrainHistory()
    start = time.perf_counter()
    bar = _progress_bar(total_steps, config.progress)
    running = None
    model.train()
    for step in range(total_steps):
        lr = lr_at(step, total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower lr or add grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        record = {"step": step + 1, "loss": loss.item(), "lr": lr}
        history.train.append(record)
        if log is not None:
            log(record)
        running = record["loss"] if running is None else 0.95 * running + 0.05 * record["loss"]
        last = step + 1 == total_steps
        if eval_data is not None and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
            metrics = {"step": step + 1, **eval_fn(model, eval_data)}
            model.train()
            history.evals.append(metrics)
            if log is not None:
                log(metrics)
        due = config.checkpoint_every and (step + 1) % config.checkpoint_every == 0
        if config.checkpoint_dir is not None and (last or due):
            history.elapsed_s = time.perf_counter() - start
            history.checkpoints.append(_checkpoint(model, config, history, step + 1))
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or last:
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
    if bar is not None:
        bar.close()
    history.elapsed_s = time.perf_counter() - start
    return history


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the >= 2-dim parameters only; frozen parameters are skipped."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


def _batch_stream(data: Union[Batch, BatchFn], config: TrainConfig, gen: torch.Generator) -> tuple[int, Iterator[Batch]]:
    """Number of steps and an endless iterator of batches (seeded shuffles, or the batch function)."""
    if callable(data):
        if config.epochs is not None:
            raise ValueError("epochs needs a dataset (a dict of tensors); with a batch function give steps")
        if config.batch_size is None:
            raise ValueError("a batch function needs an explicit batch_size")
        return config.steps, (data(gen, config.batch_size) for _ in iter(int, 1))
    n = _num_examples(data)
    batch_size = n if config.batch_size is None else min(config.batch_size, n)
    per_epoch = math.ceil(n / batch_size)
    steps = config.steps if config.steps is not None else config.epochs * per_epoch

    def stream() -> Iterator[Batch]:
        while True:
            if batch_size == n:
                yield data
                continue
            order = torch.randperm(n, generator=gen)
            for i in range(per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                yield {k: v[idx] for k, v in data.items()}

    return steps, stream()


def _checkpoint(model: nn.Module, config: TrainConfig, history: TrainHistory, step: int) -> str:
    """Save the model (our format) and the run so far to `<checkpoint_dir>/step_<step>`."""
    folder = Path(config.checkpoint_dir) / f"step_{step:06d}"
    model.save_pretrained(str(folder))
    state = {"step": step, "config": config.to_dict(), "history": history.to_dict()}
    (folder / "train_state.json").write_text(json.dumps(state))
    return str(folder)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from hooked_bilinear.progress import tqdm

    return tqdm(total=total, desc="train", dynamic_ncols=True)
