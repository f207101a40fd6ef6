"""Input noise for image training: size, determinism, clean evaluation, errors."""

import pytest
import torch

from hooked_bilinear.train import default_loss
from hooked_bilinear.train.augment import input_noise_loss


class Recorder(torch.nn.Module):
    """Stands in for a model: records the images it is given and returns their mean as the 'loss'."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, images, return_type=None, labels=None):
        self.seen.append(images.clone())
        return images.mean()


def batch(n=4000, d=64):
    gen = torch.Generator().manual_seed(0)
    return {"images": torch.rand(n, d, generator=gen), "labels": torch.zeros(n, dtype=torch.long)}


def test_noise_has_the_stated_per_pixel_std_and_leaves_the_batch_unchanged():
    data = batch()
    before = data["images"].clone()
    model = Recorder()
    input_noise_loss(0.5, seed=0)(model, data)
    noise = model.seen[0] - before
    expected = 0.5 * before.std()
    assert float(noise.std()) == pytest.approx(float(expected), rel=0.01)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01 * float(expected))
    assert torch.equal(data["images"], before)  # the caller's batch is not modified


def test_noise_is_seeded_fresh_per_call_and_zero_scale_is_the_plain_loss():
    data = batch(10, 8)
    a, b = Recorder(), Recorder()
    loss_a, loss_b = input_noise_loss(0.3, seed=1), input_noise_loss(0.3, seed=1)
    loss_a(a, data), loss_a(a, data), loss_b(b, data)
    assert torch.equal(a.seen[0], b.seen[0]) and not torch.equal(a.seen[0], a.seen[1])
    plain = Recorder()
    assert input_noise_loss(0.0)(plain, data) == default_loss(Recorder(), data)
    assert torch.equal(plain.seen[0], data["images"])


def test_noise_errors():
    with pytest.raises(ValueError, match="noise scale"):
        input_noise_loss(-0.1)
    with pytest.raises(KeyError, match="images"):
        input_noise_loss(0.5)(Recorder(), {"tokens": torch.zeros(2, 3, dtype=torch.long)})
