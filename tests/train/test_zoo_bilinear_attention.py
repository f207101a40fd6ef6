"""The bundled fully bilinear model: its card's held-out metrics recompute, it does induction at every
period 2-16 (the card's grid and the periods off it) and not at the longer ones its card says it fails
(24, 32), and its logits decompose with nothing frozen."""

import json

import pytest
import torch
import torch.nn.functional as F

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.train.recipes import INDUCTION_EVAL_SEED
from hooked_bilinear.train.recipes_attention import HALF, LONGER, PERIODS
from hooked_bilinear.train.tasks import induction_metrics, repeated_tokens
from hooked_bilinear.zoo import ZOO_DIR, list_zoo

NAME = "induction-bilinear-2l"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_pretrained(NAME)


def card():
    return json.loads((ZOO_DIR / NAME / "zoo.json").read_text())


def canonical(n: int, period: int, seed: int) -> torch.Tensor:
    """`[BOS] x x` rows, x: `period` tokens uniform in [1, 64), drawn as one [n, 1 + 2 period] block whose
    columns 1..period become x (the layout of `tasks.repeated_tokens`, rebuilt here)."""
    draws = torch.randint(1, 64, (n, 1 + 2 * period), generator=torch.Generator().manual_seed(seed))
    x = draws[:, 1 : 1 + period]
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), x, x], dim=1)


@torch.no_grad()
def repeat_scores(model, tokens: torch.Tensor, period: int) -> dict[str, float]:
    """Loss and accuracy of the next-token prediction on the repeat's targets 2..period (its first token
    cannot be known to repeat), from the model's logits."""
    logits = model(tokens)[:, period + 1 : 2 * period].float()  # predicting tokens period + 2 .. 2 period
    targets = tokens[:, period + 2 :]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
    accuracy = (logits.argmax(-1) == targets).float().mean().item()
    return {f"loss_repeated_half_period{period}": loss, f"repeated_accuracy_period{period}": accuracy}


def test_card_metrics_recomputed(model):
    cfg = model.cfg
    assert (cfg.attention, cfg.normalization_type, cfg.attn_bias, cfg.attn_only) == ("bilinear", "Scale", False, True)
    held_out = repeated_tokens(1000, HALF, 64, seed=INDUCTION_EVAL_SEED)
    metrics = induction_metrics(model, held_out)
    for h in PERIODS + LONGER:  # the card's per-period numbers, recomputed without the training code
        metrics.update(repeat_scores(model, canonical(200, h, seed=INDUCTION_EVAL_SEED + h), h))
    expected = card()["metrics"]
    assert set(metrics) == set(expected)
    for key, value in metrics.items():
        assert value == pytest.approx(expected[key], abs=1e-3), key
    assert metrics["loss_first_half"] > 3.5  # random tokens: ln(63) = 4.14
    for h in PERIODS:  # every trained period: the repeat is predicted far above chance (1/63)
        assert metrics[f"repeated_accuracy_period{h}"] > 0.7, h
        assert metrics[f"loss_repeated_half_period{h}"] < metrics["loss_first_half"] - 1.5, h
    for h in LONGER:  # longer than its training rows: near chance, as the card states
        assert metrics[f"repeated_accuracy_period{h}"] < 0.1, h


@pytest.mark.parametrize("period", [6, 9, 10, 13, 14, 15])
def test_induction_at_periods_off_the_cards_grid(model, period):
    """'Every period 2-16': the periods the card does not list, on fresh sequences (another seed)."""
    scores = repeat_scores(model, canonical(200, period, seed=777 + period), period)
    assert scores[f"repeated_accuracy_period{period}"] > 0.7


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
