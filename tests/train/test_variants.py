"""variants.safetensors: sibling models saved and rebuilt from the file alone, with clear errors."""

import pytest
import torch

from hooked_bilinear import CheckpointError, HookedBilinearConfig, HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear import HookedBilinearTransformer
from hooked_bilinear.zoo.variants import FILE, load_variants, save_variants


def models():
    mlp = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=6, d_hidden=4, n_classes=3, seed=1))
    cfg = HookedBilinearConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, n_ctx=4, seed=2)
    return {"mlp": mlp, "lm": HookedBilinearTransformer(cfg)}


def test_roundtrip_gives_the_same_outputs(tmp_path):
    saved = models()
    save_variants(saved, tmp_path)
    loaded = load_variants(tmp_path)
    assert set(loaded) == {"mlp", "lm"}
    x = torch.rand(3, 6)
    tokens = torch.tensor([[0, 3, 1, 4]])
    with torch.no_grad():
        assert torch.equal(loaded["mlp"](x), saved["mlp"](x))
        assert torch.equal(loaded["lm"](tokens), saved["lm"](tokens))
    assert set(load_variants(tmp_path, names=["lm"])) == {"lm"}


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no variants.safetensors"):
        load_variants(tmp_path)
    save_variants(models(), tmp_path)
    with pytest.raises(CheckpointError, match="no variants \\['nope'\\]"):
        load_variants(tmp_path, names=["nope"])
    with pytest.raises(ValueError, match="no '.'"):
        save_variants({"a.b": models()["mlp"]}, tmp_path / "other")
    assert not (tmp_path / "other" / FILE).exists()


def test_a_tampered_file_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    save_variants({"mlp": models()["mlp"]}, tmp_path)
    path = tmp_path / FILE
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["mlp.W_E"] = torch.zeros(7, 4)  # wrong shape for its config
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_variants(tmp_path)
