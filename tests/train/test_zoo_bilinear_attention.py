"""The bundled fully bilinear model: its card's held-out metrics recompute, it does induction at the
periods it was trained on (9-16) and not at the shorter ones its card says it fails (4, 8), and its
logits decompose with nothing frozen."""

import json

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.train.recipes import INDUCTION_EVAL_SEED
from hooked_bilinear.train.recipes_attention import HALF, period_metrics
from hooked_bilinear.train.tasks import induction_metrics, repeated_tokens
from hooked_bilinear.zoo import ZOO_DIR, list_zoo

NAME = "induction-bilinear-2l"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_pretrained(NAME)


def card():
    return json.loads((ZOO_DIR / NAME / "zoo.json").read_text())


def test_card_metrics_recomputed(model):
    cfg = model.cfg
    assert (cfg.attention, cfg.normalization_type, cfg.attn_bias, cfg.attn_only) == ("bilinear", "Scale", False, True)
    held_out = repeated_tokens(1000, HALF, 64, seed=INDUCTION_EVAL_SEED)
    metrics = {**induction_metrics(model, held_out), **period_metrics(model)}
    expected = card()["metrics"]
    assert set(metrics) == set(expected)
    for key, value in metrics.items():
        assert value == pytest.approx(expected[key], abs=1e-3), key
    assert metrics["loss_first_half"] > 3.5  # random tokens: ln(63) = 4.14
    for h in (12, 16):  # trained periods: the repeat is predicted far above chance (1/63)
        assert metrics[f"repeated_accuracy_period{h}"] > 0.4, h
        assert metrics[f"loss_repeated_half_period{h}"] < metrics["loss_first_half"] - 1.0, h
    for h in (4, 8):  # shorter than any training period: at chance, as the card states
        assert metrics[f"repeated_accuracy_period{h}"] < 0.05, h


def test_listed_small_and_carded():
    assert NAME in {row["name"] for row in list_zoo()}
    size = sum(f.stat().st_size for f in (ZOO_DIR / NAME).iterdir() if f.is_file())
    assert size < 2**20 and (ZOO_DIR / NAME / "README.md").exists()


def test_nothing_frozen_decomposition_adds_up(model):
    tokens = repeated_tokens(1, 12, 64, seed=5)["tokens"]
    d = decompose(model, tokens, level="lazy", budget=15, target=Target.logit(int(tokens[0, 20]), pos=19),
                  dtype=torch.float64)
    assert "nothing frozen" in d.description
    assert d.check().max_rel_err < 1e-5
