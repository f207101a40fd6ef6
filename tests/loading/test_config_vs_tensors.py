"""A config.json that contradicts its tensors fails fast, naming the config field, before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooked_bilinear import CheckpointError, HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.loading import native

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=13, n_ctx=8, seed=0)


@pytest.fixture
def saved(tmp_path) -> Path:
    HookedBilinearTransformer(HookedBilinearConfig(**CFG)).save_pretrained(tmp_path)
    return tmp_path


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def edit_tensor(path: Path, name: str, fn) -> None:
    state = load_file(str(path / "model.safetensors"))
    state[name] = fn(state[name])
    save_file(state, str(path / "model.safetensors"))


@pytest.mark.parametrize("field, value, fragments", [
    ("n_ctx", 100_000, ["n_ctx=100000", "'pos_embed.W_pos'", "(8, 16)"]),
    ("n_heads", 4, ["n_heads=4", "'blocks.0.attn.W_Q'", "(2, 16, 8)"]),
    ("d_vocab", 50, ["d_vocab=50", "'embed.W_E'", "(13, 16)"]),
    ("d_head", 4, ["d_head=4", "'blocks.0.attn.W_Q'"]),
    ("n_layers", 3, ["n_layers=3", "2 layers"]),
    ("n_layers", 1, ["n_layers=1", "2 layers"]),
])
def test_edited_size_names_the_field_and_the_tensor(saved, field, value, fragments):
    edit_config(saved, **{field: value})
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(saved)
    message = str(info.value)
    for fragment in fragments + ["config.json"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "n_key_value_heads" not in message  # a field the user never set


def test_huge_n_ctx_fails_before_anything_is_built(saved, monkeypatch):
    """n_ctx=100000 next to an 8-row W_pos: refused before the model (which used to allocate a 10 GB
    n_ctx² mask at construction) is built at all."""
    edit_config(saved, n_ctx=100_000)

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was built from a config that contradicts its tensors")

    monkeypatch.setattr(native, "build_model", forbidden)
    with pytest.raises(CheckpointError, match="n_ctx=100000"):
        HookedBilinearTransformer.from_pretrained(saved)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_saved_cuda_device_on_a_cpu_only_torch(saved):
    edit_config(saved, device="cuda")
    with pytest.raises(CheckpointError, match=r"config.json.*device='cuda'.*device='cpu'"):
        HookedBilinearTransformer.from_pretrained(saved)
    model = HookedBilinearTransformer.from_pretrained(saved, device="cpu")  # the override the message names
    assert model.W_E.device.type == "cpu"


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_tensor_of_the_right_shape_is_refused(saved, dtype):
    edit_tensor(saved, "blocks.1.mlp.W_l", lambda t: t.to(dtype))
    with pytest.raises(CheckpointError, match=rf"'blocks.1.mlp.W_l' has dtype {dtype}.*float parameter"):
        HookedBilinearTransformer.from_pretrained(saved)


def test_consistent_files_still_load_bit_exact(saved):
    model = HookedBilinearTransformer.from_pretrained(saved)
    fresh = HookedBilinearTransformer(HookedBilinearConfig(**CFG))
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(tokens), fresh(tokens))
