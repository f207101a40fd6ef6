"""Thread counts: set and restored around our loops, small models on one thread by default."""

import pytest
import torch

from hooked_bilinear import HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.threads import SMALL_MODEL_PARAMS, is_small, num_threads, threads_for
from hooked_bilinear.train import TrainConfig, train


def small_model():
    return HookedBilinearMLP(HookedBilinearMLPConfig(d_input=4, d_hidden=4, n_classes=2, seed=0))


def data():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 4, generator=gen)
    return {"images": images, "labels": (images[:, 0] > 0.5).long()}


def recording_loss(seen):
    def loss_fn(model, batch):
        seen.append(torch.get_num_threads())
        return model(batch["images"], return_type="loss", labels=batch["labels"])
    return loss_fn


def test_num_threads_sets_and_restores_even_after_an_error():
    torch.set_num_threads(2)
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        with num_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with num_threads(None):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_num_threads_rejects_bad_counts_and_changes_nothing(bad):
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match="thread count"):
        with num_threads(bad):
            pass
    assert torch.get_num_threads() == 2


def test_small_is_by_parameter_count():
    model = small_model()
    n = sum(p.numel() for p in model.parameters())
    assert is_small(model) and n <= SMALL_MODEL_PARAMS
    big = torch.nn.Linear(SMALL_MODEL_PARAMS, 1, bias=True)  # SMALL_MODEL_PARAMS + 1 parameters
    assert not is_small(big) and threads_for(big) is None
    assert threads_for(model) == 1 and threads_for(model, requested=3) == 3


def test_train_runs_a_small_model_on_one_thread_and_restores_the_count():
    torch.set_num_threads(2)
    seen = []
    train(small_model(), data(), steps=3, batch_size=8, progress=False, loss_fn=recording_loss(seen))
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == 2


def test_train_uses_the_requested_thread_count():
    torch.set_num_threads(1)
    seen = []
    train(small_model(), data(), steps=2, batch_size=8, progress=False, threads=2, loss_fn=recording_loss(seen))
    assert seen == [2, 2]
    assert torch.get_num_threads() == 1


def test_train_restores_the_count_after_a_failing_step():
    torch.set_num_threads(2)

    def nan_loss(model, batch):
        return model(batch["images"], return_type="loss", labels=batch["labels"]) * float("nan")

    with pytest.raises(FloatingPointError):
        train(small_model(), data(), steps=2, batch_size=8, progress=False, loss_fn=nan_loss)
    assert torch.get_num_threads() == 2


def test_train_config_rejects_a_bad_thread_count():
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(steps=1, threads=0)
