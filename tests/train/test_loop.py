"""The training loop: loss falls, schedule shape, determinism, checkpoints, config errors."""

import json
import math

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearMLP, HookedBilinearMLPConfig, HookedBilinearTransformer
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.train import TrainConfig, evaluate, lr_at, masked_next_token_loss, train
from hooked_bilinear.train.tasks import modular_addition, repeated_tokens_sampler


def tiny_transformer(d_vocab=8, n_ctx=3, seed=0):
    cfg = HookedBilinearConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=d_vocab,
                               n_ctx=n_ctx, normalization_type=None, seed=seed)
    return HookedBilinearTransformer(cfg)


def test_transformer_answer_loss_falls():
    train_set, test_set = modular_addition(p=7, train_fraction=0.6, seed=0)
    model = tiny_transformer()
    hist = train(model, train_set, eval_data=test_set, steps=60, batch_size=None, lr=1e-2, progress=False)
    assert len(hist.train) == 60 and hist.evals[-1]["step"] == 60
    assert sum(hist.losses[-5:]) / 5 < 0.5 * sum(hist.losses[:5]) / 5
    assert set(hist.final_eval) == {"step", "loss", "accuracy"}


def test_image_classifier_loss_falls():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(128, 16, generator=gen)
    labels = (images[:, :8].sum(1) > images[:, 8:].sum(1)).long()
    model = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=16, d_hidden=16, n_classes=2, seed=0))
    hist = train(model, {"images": images, "labels": labels}, epochs=10, batch_size=32, lr=1e-2, progress=False)
    assert len(hist.train) == 10 * 4
    assert hist.losses[-1] < 0.5 * hist.losses[0]
    assert evaluate(model, {"images": images, "labels": labels})["accuracy"] > 0.8


def test_next_token_and_batch_function_and_log():
    model = tiny_transformer(d_vocab=10, n_ctx=9)
    records = []
    hist = train(model, repeated_tokens_sampler(half_len=4, d_vocab=10), steps=40, batch_size=16, lr=1e-2,
                 log=records.append, progress=False)
    assert records == hist.train
    assert sum(hist.losses[-5:]) < sum(hist.losses[:5])
    with pytest.raises(ValueError, match="epochs needs a dataset"):
        train(model, repeated_tokens_sampler(4, 10), epochs=1, progress=False)


def test_masked_loss_matches_manual():
    model = tiny_transformer(d_vocab=10, n_ctx=6)
    tokens = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[:, 4:] = True
    logits = model(tokens)
    manual = torch.nn.functional.cross_entropy(logits[:, 3:5].reshape(-1, 10), tokens[:, 4:].reshape(-1))
    torch.testing.assert_close(masked_next_token_loss(logits, tokens, mask), manual)
    full = masked_next_token_loss(logits, tokens, torch.ones_like(mask))
    torch.testing.assert_close(full, model(tokens, return_type="loss"))
    with pytest.raises(ValueError, match="selects no target"):
        masked_next_token_loss(logits, tokens, torch.zeros_like(mask))


def test_same_seed_same_run_and_seed_changes_batch_order():
    train_set, _ = modular_addition(p=7, train_fraction=0.6, seed=0)
    runs = [train(tiny_transformer(), train_set, steps=8, batch_size=8, seed=s, progress=False).losses for s in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_schedule_shape():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 89)))
    constant = TrainConfig(steps=5, lr=0.3, schedule="constant")
    assert [lr_at(s, 5, constant) for s in range(5)] == [0.3] * 5
    with pytest.raises(ValueError, match="outside"):
        lr_at(100, 100, cfg)


def test_optimizer_lr_follows_schedule():
    train_set, _ = modular_addition(p=5, train_fraction=0.6, seed=0)
    hist = train(tiny_transformer(d_vocab=6), train_set, steps=6, warmup_steps=2, lr=0.01, min_lr=0.001, progress=False)
    assert [r["lr"] for r in hist.train][:2] == pytest.approx([0.005, 0.01])
    assert hist.train[-1]["lr"] == pytest.approx(0.001)


def test_checkpoints_are_loadable(tmp_path):
    train_set, test_set = modular_addition(p=7, train_fraction=0.6, seed=0)
    model = tiny_transformer()
    hist = train(model, train_set, steps=5, checkpoint_dir=str(tmp_path), checkpoint_every=2, progress=False)
    assert [p.rsplit("/", 1)[-1] for p in hist.checkpoints] == ["step_000002", "step_000004", "step_000005"]
    loaded = load_pretrained(hist.checkpoints[-1])
    assert isinstance(loaded, HookedBilinearTransformer)
    torch.testing.assert_close(loaded(test_set["tokens"]), model(test_set["tokens"]), rtol=0, atol=0)
    state = json.loads((tmp_path / "step_000005" / "train_state.json").read_text())
    assert state["step"] == 5 and len(state["history"]["train"]) == 5 and state["config"]["steps"] == 5


def test_image_checkpoint_roundtrip(tmp_path):
    model = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=4, d_hidden=4, n_classes=2, seed=0))
    data = {"images": torch.rand(8, 4), "labels": torch.randint(0, 2, (8,))}
    hist = train(model, data, steps=2, checkpoint_dir=str(tmp_path), progress=False)
    loaded = load_pretrained(hist.checkpoints[-1])
    torch.testing.assert_close(loaded(data["images"]), model(data["images"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of steps and epochs"),
    (dict(steps=1, epochs=1), "exactly one of steps and epochs"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=1, lr=1e-3, min_lr=1e-2), "min_lr"),
    (dict(steps=1, schedule="linear"), "schedule must be"),
    (dict(steps=1, checkpoint_every=5), "checkpoint_every needs checkpoint_dir"),
    (dict(steps=1, grad_clip=0.0), "grad_clip"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_replace_and_overrides():
    cfg = TrainConfig(epochs=3, lr=0.1, progress=False)
    assert cfg.replace(steps=7).epochs is None
    train_set, _ = modular_addition(p=5, train_fraction=0.6, seed=0)
    hist = train(tiny_transformer(d_vocab=6), train_set, config=cfg, steps=3)
    assert len(hist.train) == 3


def test_data_errors():
    model = tiny_transformer()
    with pytest.raises(ValueError, match="share their first axis"):
        train(model, {"tokens": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(5, dtype=torch.long)},
              steps=1, progress=False)
    with pytest.raises(KeyError, match="'tokens' or 'images'"):
        train(model, {"x": torch.zeros(4, 3)}, steps=1, progress=False)
