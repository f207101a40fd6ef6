"""Recipes for the bundled zoo: model config, data, training config and held-out evaluation.

Each recipe is deterministic (seeded init, split and batch order) and CPU-only. `zoo.py` runs them
and writes the model folders and cards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer
from hooked_bilinear.train.config import TrainConfig
from hooked_bilinear.train.loop import TrainHistory, train
from hooked_bilinear.train.losses import evaluate
from hooked_bilinear.train.tasks import (
    digits,
    induction_metrics,
    induction_tokenizer,
    modular_addition,
    repeated_tokens,
    repeated_tokens_sampler,
    stdlib_lm_data,
    tokens_to_text,
)


@dataclass
class Trained:
    """A trained zoo model and what its card needs."""

    model: nn.Module
    history: TrainHistory
    train_config: TrainConfig
    task: str
    metric: str
    metrics: dict[str, float]
    data: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- modular addition
MODADD_P = 113
MODADD_FRACTION = 0.3
MODADD_SEED = 0


def modadd_config() -> HookedBilinearConfig:
    return HookedBilinearConfig(
        n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=MODADD_P + 1, n_ctx=3,
        normalization_type=None, positional_embedding_type="standard", seed=0, model_name="modadd-113-1l",
    )


def train_modadd(progress: bool = True) -> Trained:
    """1-layer bilinear transformer on a + b mod 113: 30 % of the pairs, batches of 256, weight decay 1."""
    train_set, test_set = modular_addition(MODADD_P, MODADD_FRACTION, seed=MODADD_SEED)
    model = HookedBilinearTransformer(modadd_config())
    config = TrainConfig(steps=2500, batch_size=256, lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98),
                         warmup_steps=50, min_lr=3e-4, eval_every=100, seed=0, progress=progress)
    history = train(model, train_set, eval_data=test_set, config=config)
    test = evaluate(model, test_set)
    metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "train_accuracy": evaluate(model, train_set)["accuracy"]}
    data = (f"all {MODADD_P}² pairs (a, b) as tokens [a, b, '='={MODADD_P}], label (a + b) mod {MODADD_P}; "
            f"{MODADD_FRACTION:.0%} train / {1 - MODADD_FRACTION:.0%} test, split seed {MODADD_SEED} "
            f"(`hooked_bilinear.train.tasks.modular_addition`)")
    return Trained(model, history, config, "modular addition mod 113", "test_accuracy", metrics, data)


# ---------------------------------------------------------------- induction
INDUCTION_VOCAB = 64
INDUCTION_HALF = 32
INDUCTION_EVAL_SEED = 12345


def induction_config() -> HookedBilinearConfig:
    return HookedBilinearConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, d_vocab=INDUCTION_VOCAB, n_ctx=128,
        normalization_type="LN", positional_embedding_type="rotary", seed=0, model_name="induction-2l",
        tokenizer_name="induction-wordlevel-64",
    )


def induction_eval_data() -> dict[str, torch.Tensor]:
    """1,000 canonical held-out sequences ([BOS], 32 random tokens, the same 32 again)."""
    return repeated_tokens(1000, INDUCTION_HALF, INDUCTION_VOCAB, seed=INDUCTION_EVAL_SEED)


def induction_head_scores(model: HookedBilinearTransformer, n_prompts: int = 10) -> torch.Tensor:
    """TL's `detect_head(model, prompt, "induction_head")` averaged over held-out prompts [n_layers, n_heads]."""
    from hooked_bilinear._tl import detect_head

    prompts = repeated_tokens(n_prompts, INDUCTION_HALF, INDUCTION_VOCAB, seed=INDUCTION_EVAL_SEED + 1)["tokens"]
    return torch.stack([detect_head(model, tokens_to_text(t), "induction_head", exclude_bos=True) for t in prompts]).mean(0)


def train_induction(progress: bool = True) -> Trained:
    """2-layer bilinear transformer (rotary, LN) on repeated random sequences with a varying period (fresh batches)."""
    model = HookedBilinearTransformer(induction_config(), tokenizer=induction_tokenizer(INDUCTION_VOCAB))
    sampler = repeated_tokens_sampler(INDUCTION_HALF, INDUCTION_VOCAB, max_offset=16)
    config = TrainConfig(steps=3000, batch_size=32, lr=1e-3, weight_decay=0.01, warmup_steps=100,
                         min_lr=1e-4, grad_clip=1.0, eval_every=250, seed=0, progress=progress)
    eval_set = induction_eval_data()
    history = train(model, sampler, eval_data=eval_set, eval_fn=induction_metrics, config=config)
    metrics = induction_metrics(model, eval_set)
    scores = induction_head_scores(model)
    layer, head = divmod(int(scores.argmax()), model.cfg.n_heads)
    metrics.update(induction_score=float(scores.max()), induction_layer=layer, induction_head=head)
    data = ("fresh random sequences each step: [BOS], an even random prefix of length 2j (j <= 8), a random block "
            f"of length {INDUCTION_HALF} - j and its repeat, tokens uniform in [1, {INDUCTION_VOCAB}); held out: "
            f"1,000 canonical sequences ([BOS] + 32 + the same 32), seed {INDUCTION_EVAL_SEED}")
    notes = [f"Induction head score (TL `detect_head`, 'induction_head', exclude_bos=True, mean of 10 held-out "
             f"prompts): {scores.max():.3f} at L{layer}H{head}; all scores {[[round(float(s), 3) for s in row] for row in scores]}.",
             "Rotary positions: the same recipe with learned absolute positions (`positional_embedding_type="
             "'standard'`) reaches only ~0.53 repeated-half loss after 4,000 steps and has no induction head "
             "(every detect_head score < 0.05): its attention stays diffuse, and how it predicts the repeat was not "
             "analysed.",
             "Training sequences are 65 tokens; `n_ctx` is 128 (rotary has no position parameters) because TL's "
             "`detect_head` requires seq_len < n_ctx."]
    return Trained(model, history, config, "induction (repeated random tokens)", "loss_repeated_half", metrics,
                   data, notes)


# ---------------------------------------------------------------- digits
def digits_config() -> HookedBilinearMLPConfig:
    return HookedBilinearMLPConfig(d_input=64, d_hidden=64, n_layers=1, n_classes=10, input_shape=(8, 8),
                                   seed=0, model_name="digits-bilinear")


def train_digits(progress: bool = True) -> Trained:
    """One-layer bilinear classifier (embed 64 -> 64, bilinear, head) on sklearn's 8×8 digits."""
    train_set, test_set = digits(test_fraction=0.2, seed=0)
    model = HookedBilinearMLP(digits_config())
    config = TrainConfig(epochs=100, batch_size=64, lr=1e-3, weight_decay=0.1, warmup_steps=50, min_lr=0.0,
                         eval_every=500, seed=0, progress=progress)
    history = train(model, train_set, eval_data=test_set, config=config)
    test = evaluate(model, test_set)
    metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "train_accuracy": evaluate(model, train_set)["accuracy"]}
    data = "sklearn `load_digits` (1,797 8×8 images, pixels / 16), 80 % train / 20 % test, split seed 0"
    return Trained(model, history, config, "8×8 digit classification", "test_accuracy", metrics, data)


# ---------------------------------------------------------------- tiny LM
TINY_LM_CTX = 128
TINY_LM_VOCAB = 2048


def tiny_lm_config() -> HookedBilinearConfig:
    return HookedBilinearConfig(
        n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=TINY_LM_VOCAB, n_ctx=TINY_LM_CTX,
        normalization_type="RMS", seed=0, model_name="tiny-lm", tokenizer_name="stdlib-bpe-2048",
    )


def train_tiny_lm(progress: bool = True) -> Trained:
    """2-layer bilinear LM on the Python standard library source, with a byte-level BPE trained on it."""
    tokenizer, train_set, heldout = stdlib_lm_data(TINY_LM_CTX, TINY_LM_VOCAB)
    model = HookedBilinearTransformer(tiny_lm_config(), tokenizer=tokenizer)
    config = TrainConfig(steps=1500, batch_size=32, lr=3e-3, weight_decay=0.1, warmup_steps=100,
                         min_lr=3e-4, grad_clip=1.0, eval_every=250, seed=0, progress=progress)
    eval_subset = {"tokens": heldout["tokens"][:128]}
    history = train(model, train_set, eval_data=eval_subset, config=config)
    metrics = {"heldout_loss": evaluate(model, heldout, batch_size=128)["loss"],
               "train_loss_last50": sum(history.losses[-50:]) / 50}
    data = (f"source of the top-level modules of the local Python standard library (PSF licence), sorted by name; "
            f"every 10th module held out; byte-level BPE ({TINY_LM_VOCAB}) trained on the train modules; "
            f"{train_set['tokens'].shape[0]:,} train / {heldout['tokens'].shape[0]:,} held-out windows of "
            f"{TINY_LM_CTX} tokens (`hooked_bilinear.train.tasks.stdlib_lm_data`)")
    return Trained(model, history, config, "language modelling (Python stdlib source)", "heldout_loss", metrics, data)


def train_induction_bilinear(progress: bool = True) -> Trained:
    """The fully bilinear `induction-bilinear-2l` (recipe in `recipes_attention.py`, which imports this module)."""
    from hooked_bilinear.train.recipes_attention import train_induction_bilinear as run

    return run(progress)


RECIPES: dict[str, Callable[..., Trained]] = {
    "digits-bilinear": train_digits,
    "induction-bilinear-2l": train_induction_bilinear,
    "induction-2l": train_induction,
    "modadd-113-1l": train_modadd,
    "tiny-lm": train_tiny_lm,
}

__all__ = ["RECIPES", "Trained"]
