"""Training TopK SAEs and transcoders on activations streamed from the model, with `train/`'s loop.

Loss: normalised MSE `‖y − ŷ‖² / ‖y − ȳ‖²` plus the AuxK term of Gao et al. (2024) for dead
features (the top `k_aux` dead pre-activations reconstruct the residual), decoder rows renormalised
to unit norm after every step, `b_dec` started at the mean of the first buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError
from hooked_bilinear.features.buffer import ActivationBuffer
from hooked_bilinear.features.config import SAEConfig
from hooked_bilinear.features.sae import SAE


@dataclass
class SAETrainConfig:
    """Knobs of `train_sae` (the optimiser's go to `train.TrainConfig`).

    Args:
        steps, batch_size, lr, warmup_steps: as in `TrainConfig` (batch = activation rows).
        aux_coef: weight of the AuxK loss; dead_after: steps without firing after which a feature is dead.
        buffer_size, windows_per_chunk: see `ActivationBuffer`.
        seed: seeds weights, window order and shuffles.
        progress: the `train/` progress bar.
    """

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    warmup_steps: int = 50
    aux_coef: float = 1 / 32
    dead_after: int = 200
    buffer_size: int = 32768
    windows_per_chunk: int = 32
    seed: int = 0
    progress: bool = True


def train_sae(model, tokens: Tensor, hook_name: str, *, d_sae: int, k: int, hook_name_out: Optional[str] = None,
              config: Optional[SAETrainConfig] = None, **overrides) -> tuple[SAE, dict]:
    """Train a TopK SAE (or, with `hook_name_out`, a transcoder) on `model`'s activations over `tokens`.

    Args:
        model: a HookedBilinearTransformer (not changed).
        tokens: token windows `[n_windows, pos]`, streamed through the model in chunks.
        hook_name: where the dictionary reads; hook_name_out: where a transcoder writes.
        d_sae, k: features and active features.
        config / overrides: an `SAETrainConfig` or its fields.

    Returns:
        `(sae, history)` with `history = {"loss": [...], "elapsed_s": ...}`.

    Example:
        >>> sae, hist = train_sae(model, tokens, "blocks.1.hook_mlp_out", d_sae=512, k=16, steps=500)  # doctest: +SKIP
    """
    from hooked_bilinear.features.splice import hook_widths
    from hooked_bilinear.model.validation import check_hook_names
    from hooked_bilinear.train import TrainConfig, train

    cfg = config or SAETrainConfig()
    if overrides:
        cfg = SAETrainConfig(**{**cfg.__dict__, **overrides})
    names = [hook_name] + ([hook_name_out] if hook_name_out else [])
    check_hook_names(names, model.hook_dict)
    widths = hook_widths(model, names)
    if any(len(w) != 1 for w in widths.values()):
        raise InputError(f"dictionaries read [batch, pos, d] activations; {widths} has extra axes")
    d_in, d_out = widths[hook_name][0], widths[names[-1]][0]
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, hook_name=hook_name, hook_name_out=hook_name_out,
                        d_out=d_out, architecture="topk", topk_relu=True,
                        apply_b_dec_to_input=hook_name_out is None, model_name=model.cfg.model_name),
              seed=cfg.seed)
    buffer = ActivationBuffer(model, tokens, names, cfg.buffer_size, cfg.windows_per_chunk, cfg.seed)
    with torch.no_grad():
        sae.b_dec.copy_(buffer.rows[-1].mean(0))
    last_fired = torch.zeros(d_sae, dtype=torch.long)
    step = [0]

    def batches(generator, batch_size):
        rows = buffer.next(batch_size)
        return {"x": rows[0], "y": rows[-1]}

    def loss_fn(module, batch):
        x, y = batch["x"], batch["y"]
        pre, acts = module._encode(x, hooked=False)
        recons = module._decode(acts, hooked=False)
        var = (y - y.mean(0)).pow(2).sum(-1).mean()
        loss = (y - recons).pow(2).sum(-1).mean() / var
        step[0] += 1
        with torch.no_grad():
            last_fired[(acts > 0).any(0)] = step[0]
        dead = (step[0] - last_fired) > cfg.dead_after
        n_dead = int(dead.sum())
        if module.training and n_dead and cfg.aux_coef:
            k_aux = min(n_dead, max(1, d_out // 2))
            masked = pre.masked_fill(~dead, float("-inf"))
            top = masked.topk(k_aux, dim=-1)
            aux_acts = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            residual = (y - recons).detach()
            loss = loss + cfg.aux_coef * (residual - aux_acts @ module.W_dec).pow(2).sum(-1).mean() / var
        return loss

    def renorm(record):
        if "lr" in record:  # a train step (evals have no lr)
            with torch.no_grad():
                sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    history = train(sae, batches, loss_fn=loss_fn, log=renorm,
                    config=TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                       warmup_steps=cfg.warmup_steps, seed=cfg.seed, progress=cfg.progress,
                                       min_lr=cfg.lr / 10))
    sae.eval()
    return sae, {"loss": history.losses, "elapsed_s": history.elapsed_s}
