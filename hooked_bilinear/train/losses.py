"""Loss and evaluation functions for batches given as dicts of tensors.

A batch is a dict of tensors sharing their first (example) axis. The default loss picks by keys:

- `images` + `labels`: classification cross-entropy (HookedBilinearMLP).
- `tokens` + `labels`: cross-entropy of the logits at the **last** position against `labels`
  (answer-token tasks such as modular addition "a b =" -> c).
- `tokens` + `loss_mask`: next-token cross-entropy on the positions where `loss_mask` is true
  (`loss_mask[:, t]` marks token t as a target, predicted from position t-1).
- `tokens` alone: mean next-token cross-entropy (`model(tokens, return_type="loss")`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

Batch = dict[str, Tensor]
LossFn = Callable[[torch.nn.Module, Batch], Tensor]


def masked_next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"], loss_mask: Bool[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Mean of `-log p(tokens[:, t] | tokens[:, :t])` over the targets t with `loss_mask[:, t]` true.

    `loss_mask[:, 0]` is ignored (position 0 has no prediction).
    """
    if loss_mask.shape != tokens.shape:
        raise ValueError(f"loss_mask has shape {tuple(loss_mask.shape)} but tokens has {tuple(tokens.shape)}")
    target_mask = loss_mask[:, 1:].to(torch.bool)
    if not bool(target_mask.any()):
        raise ValueError("loss_mask selects no target position (positions >= 1)")
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
    return -(picked[target_mask]).mean()


def default_loss(model: torch.nn.Module, batch: Batch) -> Float[Tensor, ""]:
    """The loss implied by the batch's keys (see the module docstring)."""
    if "images" in batch:
        if "labels" not in batch:
            raise KeyError(f"an image batch needs 'labels'; got keys {sorted(batch)}")
        return model(batch["images"], return_type="loss", labels=batch["labels"])
    if "tokens" not in batch:
        raise KeyError(f"a batch needs 'tokens' or 'images'; got keys {sorted(batch)}")
    tokens = batch["tokens"]
    if "labels" in batch:
        logits = model(tokens)
        return F.cross_entropy(logits[:, -1].float(), batch["labels"])
    if "loss_mask" in batch:
        return masked_next_token_loss(model(tokens), tokens, batch["loss_mask"])
    return model(tokens, return_type="loss")


def _accuracy(model: torch.nn.Module, batch: Batch) -> Optional[Tensor]:
    """Fraction of argmax predictions equal to `labels` (images, or the last token position)."""
    if "labels" not in batch:
        return None
    if "images" in batch:
        logits = model(batch["images"])
    else:
        logits = model(batch["tokens"])[:, -1]
    return (logits.argmax(-1) == batch["labels"]).float().mean()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: Batch, loss_fn: Optional[LossFn] = None, batch_size: int = 1024
) -> dict[str, float]:
    """Mean loss (and accuracy when the data has `labels`) over `data`, in chunks of `batch_size`.

    Chunk means are weighted by chunk size, so a masked loss is averaged per example, not per token.

    Returns:
        `{"loss": ..., "accuracy": ...}` (accuracy only for labelled data).
    """
    loss_fn = loss_fn or default_loss
    n = _num_examples(data)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        for start in range(0, n, batch_size):
            chunk = {k: v[start : start + batch_size] for k, v in data.items()}
            weight = next(iter(chunk.values())).shape[0] / n
            totals["loss"] = totals.get("loss", 0.0) + float(loss_fn(model, chunk)) * weight
            acc = _accuracy(model, chunk)
            if acc is not None:
                totals["accuracy"] = totals.get("accuracy", 0.0) + float(acc) * weight
    finally:
        model.train(was_training)
    return totals


def _num_examples(data: Batch) -> int:
    """Shared first-axis size of a dict of tensors; raises on an empty dict or mismatched sizes."""
    if not isinstance(data, dict) or not data:
        raise TypeError(f"data must be a non-empty dict of tensors, got {type(data).__name__}")
    sizes = {k: v.shape[0] for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all tensors in the data must share their first axis, got sizes {sizes}")
    return next(iter(sizes.values()))
