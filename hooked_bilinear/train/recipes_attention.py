"""Recipe of the bundled fully bilinear model `induction-bilinear-2l`: softmax-free bilinear attention,
bilinear MLPs and per-channel scale norms, so the whole model is a polynomial of its embeddings and
`decompose` freezes nothing (docs/attention.md)."""

from __future__ import annotations


from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer
from hooked_bilinear.train.config import TrainConfig
from hooked_bilinear.train.loop import train
from hooked_bilinear.train.recipes import (
    INDUCTION_EVAL_SEED, INDUCTION_HALF, INDUCTION_VOCAB, Trained, induction_eval_data,
)
from hooked_bilinear.train.tasks import induction_metrics, induction_tokenizer, repeated_tokens, repeated_tokens_sampler

PERIODS = (8, 16, 24, 32)  # held-out periods for "induction on sequences of any period"


def induction_bilinear_config() -> HookedBilinearConfig:
    return HookedBilinearConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, d_vocab=INDUCTION_VOCAB, n_ctx=128,
        attention="bilinear", normalization_type="Scale", positional_embedding_type="rotary",
        attn_bias=False, unembed_bias=False, seed=0, model_name="induction-bilinear-2l",
        tokenizer_name="induction-wordlevel-64",
    )


def period_metrics(model, periods=PERIODS, n: int = 200) -> dict[str, float]:
    """Repeated-half loss and accuracy on held-out canonical sequences of each period (seeded per period)."""
    out = {}
    for h in periods:
        m = induction_metrics(model, repeated_tokens(n, h, INDUCTION_VOCAB, seed=INDUCTION_EVAL_SEED + h))
        out[f"loss_repeated_half_period{h}"] = m["loss_repeated_half"]
        out[f"repeated_accuracy_period{h}"] = m["repeated_accuracy"]
    return out


def train_induction_bilinear(progress: bool = True) -> Trained:
    """2-layer fully bilinear transformer on repeated random sequences with a varying period."""
    model = HookedBilinearTransformer(induction_bilinear_config(), tokenizer=induction_tokenizer(INDUCTION_VOCAB))
    sampler = repeated_tokens_sampler(INDUCTION_HALF, INDUCTION_VOCAB, max_offset=16)
    config = TrainConfig(steps=3000, batch_size=32, lr=3e-3, weight_decay=0.01, warmup_steps=100,
                         min_lr=3e-4, grad_clip=1.0, eval_every=250, seed=0, progress=progress)
    eval_set = induction_eval_data()
    history = train(model, sampler, eval_data=eval_set, eval_fn=induction_metrics, config=config)
    metrics = {**induction_metrics(model, eval_set), **period_metrics(model)}
    data = ("fresh random sequences each step: [BOS], an even random prefix of length 2j (j <= 8), a random block "
            f"of length {INDUCTION_HALF} - j and its repeat, tokens uniform in [1, {INDUCTION_VOCAB}); held out: "
            f"1,000 canonical sequences ([BOS] + 32 + the same 32), seed {INDUCTION_EVAL_SEED}, and 200 canonical "
            f"sequences for each period {list(PERIODS)} (seed {INDUCTION_EVAL_SEED} + period)")
    notes = ["Fully bilinear: attention A = mask·(q1·k1)(q2·k2)/d_head with no softmax, bilinear MLPs, per-channel "
             "scale norms (`normalization_type='Scale'`), no biases: `decompose` on it freezes nothing.",
             "Same data and schedule shape as `induction-2l`, lr 3e-3."]
    return Trained(model, history, config, "induction (repeated random tokens), fully bilinear",
                   "loss_repeated_half", metrics, data, notes)


__all__ = ["PERIODS", "induction_bilinear_config", "period_metrics", "train_induction_bilinear"]
