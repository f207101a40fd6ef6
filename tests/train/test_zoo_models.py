"""Every bundled model loads offline by name, and its card's held-out metric holds when recomputed."""

import json

import pytest

from hooked_bilinear import HookedBilinearMLP, HookedBilinearTransformer, bundled_models
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.train import evaluate
from hooked_bilinear.train.recipes import (
    DIGITS_SEEDS,
    INDUCTION_PERIODS,
    MODADD_FRACTION,
    MODADD_P,
    MODADD_SEED,
    TINY_LM_CTX,
    digits_claims,
    induction_eval_data,
    induction_head_scores,
    induction_period_table,
)
from hooked_bilinear.train.tasks import (
    chunk_tokens,
    digits,
    induction_by_period,
    induction_metrics,
    modular_addition,
    stdlib_corpus,
)
from hooked_bilinear.zoo import ZOO_DIR, list_zoo, zoo_table
from hooked_bilinear.zoo.variants import load_variants

ZOO = ["digits-bilinear", "induction-2l", "modadd-113-1l", "tiny-lm"]
INDUCTION_MAX_RATIO = 0.55  # repeated-half / first-half loss: worst on the card 0.42 (period 4, no BOS), with margin
DIGITS_MIN_COS = 0.85  # cross-seed |cos| of the top eigenvectors: 0.937 measured (card), with margin


def card(name):
    return json.loads((ZOO_DIR / name / "zoo.json").read_text())


def test_zoo_is_complete_small_and_listed():
    assert set(ZOO) <= set(bundled_models())
    for name in ZOO:
        size = sum(f.stat().st_size for f in (ZOO_DIR / name).iterdir() if f.is_file())
        assert size < 5 * 2**20, f"{name} is {size / 2**20:.2f} MiB"
        assert (ZOO_DIR / name / "README.md").exists()
    rows = {row["name"]: row for row in list_zoo()}
    assert set(ZOO) <= set(rows)
    assert all(isinstance(rows[n]["value"], float) and rows[n]["params"] > 0 for n in ZOO)
    table = zoo_table()
    assert all(f"`{n}`" in table for n in ZOO)


def test_modadd_held_out_accuracy():
    model = HookedBilinearTransformer.from_pretrained("modadd-113-1l")
    assert model.cfg.d_vocab == MODADD_P + 1 and model.cfg.n_layers == 1 and model.cfg.is_bilinear
    _, test = modular_addition(MODADD_P, MODADD_FRACTION, seed=MODADD_SEED)
    accuracy = evaluate(model, test)["accuracy"]
    assert accuracy >= 0.99
    assert accuracy == pytest.approx(card("modadd-113-1l")["metrics"]["test_accuracy"], abs=1e-3)


def test_digits_held_out_accuracy():
    model = load_pretrained("digits-bilinear")
    assert isinstance(model, HookedBilinearMLP) and model.cfg.input_shape == (8, 8)
    _, test = digits(test_fraction=0.2, seed=0)
    accuracy = evaluate(model, test)["accuracy"]
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(card("digits-bilinear")["metrics"]["test_accuracy"], abs=1e-3)


def test_induction_repeated_half_and_induction_head():
    model = load_pretrained("induction-2l")
    assert model.tokenizer is not None and model.cfg.n_layers == 2
    metrics = induction_metrics(model, induction_eval_data())
    assert metrics["loss_first_half"] > 3.5  # random tokens: ln(63) = 4.14
    assert metrics["loss_repeated_half"] < 0.1 * metrics["loss_first_half"]
    assert metrics["loss_repeated_half"] == pytest.approx(card("induction-2l")["metrics"]["loss_repeated_half"], abs=1e-3)
    scores = induction_head_scores(model, n_prompts=3)
    assert scores.shape == (2, model.cfg.n_heads)
    assert float(scores[1].max()) > 0.5  # a layer-1 head puts most of its attention on the induction target


# Periods not on the card's grid (INDUCTION_PERIODS), to check the claim "every period from 4 to 63".
OFF_GRID_PERIODS = (5, 7, 10, 14, 20, 28, 36, 44, 52, 60)


def test_induction_at_every_period_with_and_without_bos():
    model = load_pretrained("induction-2l")
    rows = induction_by_period(model, INDUCTION_PERIODS + OFF_GRID_PERIODS, model.cfg.d_vocab, n=60, seed=777)
    assert len(rows) == 2 * len(INDUCTION_PERIODS + OFF_GRID_PERIODS)
    for r in rows:
        # the first copy is random tokens (ln 63 = 4.14 nats); the repeated copy must be far below it
        assert r["loss_first_half"] > 3.5, r
        assert r["loss_repeated_half"] < INDUCTION_MAX_RATIO * r["loss_first_half"], r
    # the card's table, recomputed with its own seeds
    table = induction_period_table(model)
    carded = card("induction-2l")["tables"]["loss by period"]
    assert [(r["period"], r["bos"]) for r in table] == [(r["period"], r["bos"]) for r in carded]
    for got, want in zip(table, carded):
        assert got["loss_repeated_half"] == pytest.approx(want["loss_repeated_half"], abs=1e-3)
        assert got["loss_first_half"] == pytest.approx(want["loss_first_half"], abs=1e-3)


def test_induction_tokenizer_prepends_its_special_bos_by_default():
    model = load_pretrained("induction-2l")
    assert model.cfg.default_prepend_bos is True
    assert model.to_tokens("t5 t9").tolist() == [[0, 5, 9]]
    assert model.to_tokens("t5 t9", prepend_bos=False).tolist() == [[5, 9]]
    assert model.to_str_tokens("t5")[0] == "[BOS]"


def test_digits_eigenvector_claims_on_the_card():
    model = load_pretrained("digits-bilinear")
    variants = load_variants("digits-bilinear")
    seeds = [variants[f"seed{s}"] for s in DIGITS_SEEDS[1:]]
    metrics, table = digits_claims(model, seeds, variants["noise_free"])
    carded = card("digits-bilinear")
    for key, value in metrics.items():
        assert value == pytest.approx(carded["metrics"][key], abs=1e-3), key
    assert [r["digit"] for r in table] == list(range(10))
    # Pearce et al.: top eigenvectors agree across seeds (0.8-0.9 on MNIST), input noise smooths them,
    # and a handful of eigenvectors per class keeps the accuracy. Thresholds: the measured values with margin.
    assert metrics["top_eigvec_cross_seed_cos"] > DIGITS_MIN_COS
    assert metrics["top_eigvec_roughness"] < metrics["top_eigvec_roughness_noise_free"]
    full = evaluate(model, digits(test_fraction=0.2, seed=0)[1])["accuracy"]
    assert metrics["test_accuracy_top3"] >= full - 0.01
    assert metrics["test_accuracy_top1"] < full - 0.1  # one eigenvector is not enough


def test_tiny_lm_held_out_loss():
    model = load_pretrained("tiny-lm")
    assert model.tokenizer is not None and model.cfg.n_ctx == TINY_LM_CTX
    _, heldout_texts = stdlib_corpus(heldout_every=10)
    heldout = chunk_tokens(model.tokenizer.tokenizer, heldout_texts, TINY_LM_CTX)
    loss = evaluate(model, heldout, batch_size=128)["loss"]
    assert loss < 4.0  # a unigram model of this corpus scores 6.34 on the same held-out tokens
    # the stdlib differs slightly between Python patch releases, hence the tolerance
    assert loss == pytest.approx(card("tiny-lm")["metrics"]["heldout_loss"], abs=0.05)
    text = "def f(x):\n    return x"
    assert model.to_string(model.to_tokens(text)[0]) == text
