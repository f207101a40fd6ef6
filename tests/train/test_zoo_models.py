"""Every bundled model loads offline by name, and its card's held-out metric holds when recomputed."""

import json

import pytest

from hooked_bilinear import HookedBilinearMLP, HookedBilinearTransformer, bundled_models
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.train import evaluate
from hooked_bilinear.train.recipes import (
    MODADD_FRACTION,
    MODADD_P,
    MODADD_SEED,
    TINY_LM_CTX,
    induction_eval_data,
    induction_head_scores,
)
from hooked_bilinear.train.tasks import chunk_tokens, digits, induction_metrics, modular_addition, stdlib_corpus
from hooked_bilinear.zoo import ZOO_DIR, list_zoo, zoo_table

ZOO = ["digits-bilinear", "induction-2l", "modadd-113-1l", "tiny-lm"]


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
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text
    # by default tiny-lm prepends its BOS, <|endoftext|>, as a document followed it in training
    assert model.to_string(model.to_tokens(text)[0]) == "<|endoftext|>" + text
