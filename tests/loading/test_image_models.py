"""Image models (`tdooms/mnist` subfolders and local folders) as HookedBilinearMLP."""

import json

import pytest
import torch

from hooked_bilinear import CheckpointError, HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.loading import load_pretrained

from ._checkpoints import put_in_hub_cache, write_2024_10, write_mnist
from ._reference import forward_mnist, raw

IMAGES = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
SUBFOLDER = "n0.5-wd0.5-r0-t0"


def _config(folder):
    return json.loads((folder / "config.json").read_text())


VARIANTS = {
    "1-layer": dict(),
    "bias": dict(bias=True),
    "2-layers-residual": dict(n_layer=2, residual=True),
    "2-layers-bias": dict(n_layer=2, bias=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_mnist_from_hub_subfolder_matches_reference(variant, tmp_path, cache_dir):
    folder = write_mnist(tmp_path / SUBFOLDER, **VARIANTS[variant])
    put_in_hub_cache(cache_dir, "tdooms/mnist", folder, subfolder=SUBFOLDER)
    model = HookedBilinearMLP.from_pretrained("tdooms/mnist", subfolder=SUBFOLDER, cache_dir=cache_dir)
    expected = forward_mnist(_config(folder), raw(folder), IMAGES)
    assert (model(IMAGES).double() - expected).abs().max() <= 1e-5
    assert model.cfg.model_name == f"tdooms/mnist/{SUBFOLDER}"
    assert model.cfg.input_shape == (28, 28) and model.cfg.residual == VARIANTS[variant].get("residual", False)


def test_mnist_layout(tmp_path):
    folder = write_mnist(tmp_path / "m", bias=True)
    model = HookedBilinearMLP.from_pretrained(folder)
    T = raw(folder)
    w, b = T["blocks.0.weight"].float(), T["blocks.0.bias"].float()
    torch.testing.assert_close(model.W_E, T["embed.weight"].float().T)
    torch.testing.assert_close(model.blocks[0].mlp.W_l, w[:20].T)
    torch.testing.assert_close(model.blocks[0].mlp.W_r, w[20:].T)
    torch.testing.assert_close(model.blocks[0].mlp.b_r, b[20:])
    torch.testing.assert_close(model.W_U, T["head.weight"].float().T)


def test_id_with_subfolder_path_and_local_subfolder(tmp_path, cache_dir):
    folder = write_mnist(tmp_path / "repo" / SUBFOLDER)
    put_in_hub_cache(cache_dir, "tdooms/mnist", folder, subfolder=SUBFOLDER)
    a = load_pretrained(f"tdooms/mnist/{SUBFOLDER}", cache_dir=cache_dir)
    b = HookedBilinearMLP.from_pretrained(tmp_path / "repo", subfolder=SUBFOLDER)
    assert torch.equal(a(IMAGES), b(IMAGES))


def test_missing_subfolder_lists_the_models(tmp_path, cache_dir):
    for name in (SUBFOLDER, "n0-wd0-r0-t0"):
        put_in_hub_cache(cache_dir, "tdooms/mnist", write_mnist(tmp_path / name), subfolder=name)
    with pytest.raises(CheckpointError, match=r"pass subfolder=.*n0-wd0-r0-t0"):
        HookedBilinearMLP.from_pretrained("tdooms/mnist", cache_dir=cache_dir)
    with pytest.raises(CheckpointError, match=r"has no config.json.*pass subfolder=.*n0-wd0-r0-t0"):
        HookedBilinearMLP.from_pretrained(tmp_path)


def test_native_image_model_round_trip(tmp_path):
    model = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=64, d_hidden=16, n_layers=2, bias=True, seed=0))
    model.save_pretrained(tmp_path / "native")
    loaded = HookedBilinearMLP.from_pretrained(tmp_path / "native")
    x = torch.rand(3, 64)
    assert torch.equal(model(x), loaded(x))


def test_public_image_model_round_trips_through_our_format(tmp_path):
    model = HookedBilinearMLP.from_pretrained(write_mnist(tmp_path / "m", bias=True, n_layer=2))
    model.save_pretrained(tmp_path / "native")
    loaded = HookedBilinearMLP.from_pretrained(tmp_path / "native")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_language_model_is_not_an_image_model(tmp_path):
    folder = write_2024_10(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="not an image model"):
        HookedBilinearMLP.from_pretrained(folder, tokenizer=False)
