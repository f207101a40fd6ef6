"""TopK SAEs from a scope repo layout (fake HF cache, offline), checked against a reference and attached."""

import json

import pytest
import torch
from safetensors.torch import save_file

from hooked_bilinear import CheckpointError
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.loading.sae import load_sae, sae_subfolder

from ._checkpoints import put_in_hub_cache, write_2024_10

D, EXPANSION, K = 16, 4, 5
TOKENS = torch.tensor([[1, 5, 9, 2, 33, 7]])


def _write_sae(folder, point=("mlp_in", 1), encoder_bias=True, tag=None):
    g = torch.Generator().manual_seed(3)
    F = D * EXPANSION
    config = {"point": list(point), "target": None, "lr": 1e-4, "in_batch": 32, "out_batch": 4096, "d_model": D,
              "n_ctx": 12, "expansion": EXPANSION, "k": K, "normalize": None, "init_scale": 1.0,
              "bilinear_encoder": False, "token_lookup": False, "encoder_bias": encoder_bias, "tag": tag}
    tensors = {"w_enc.weight": torch.randn(F, D, generator=g), "w_dec.weight": torch.randn(D, F, generator=g),
               "b_dec": torch.randn(D, generator=g)}
    if encoder_bias:
        tensors["w_enc.bias"] = torch.randn(F, generator=g)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def _reference(T, x):
    pre = (x - T["b_dec"]) @ T["w_enc.weight"].T + T.get("w_enc.bias", 0)
    top = pre.topk(K, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    return f @ T["w_dec.weight"].T + T["b_dec"]


def test_sae_from_scope_repo_matches_reference(tmp_path, cache_dir):
    name = sae_subfolder(1, "mlp_in", EXPANSION, K)
    assert name == "1-mlp-in-x4-k5"
    T = _write_sae(tmp_path / name)
    put_in_hub_cache(cache_dir, "tdooms/ts-medium-scope", tmp_path / name, subfolder=name)
    sae = load_sae("tdooms/ts-medium-scope", layer=1, point="mlp_in", expansion=EXPANSION, k=K, cache_dir=cache_dir)
    assert sae.cfg.hook_name == "blocks.1.ln2.hook_normalized" and sae.cfg.d_sae == 64
    x = torch.randn(3, 7, D)
    torch.testing.assert_close(sae(x), _reference(T, x))
    _, cache = sae.run_with_cache(x)
    assert ((cache["hook_sae_acts_post"] != 0).sum(-1) == K).all()


def test_sae_attaches_at_its_hook_point(tmp_path):
    model = load_pretrained(write_2024_10(tmp_path / "lm"), tokenizer=False)
    _write_sae(tmp_path / "sae", point=("resid_mid", 0), encoder_bias=False)
    sae = load_sae(tmp_path / "sae")
    with model.hooks(sae.replacement_hooks()):
        patched = model(TOKENS)
    clean, cache = model.run_with_cache(TOKENS)
    recons = sae(cache["blocks.0.hook_resid_mid"])
    with model.hooks([("blocks.0.hook_resid_mid", lambda acts, hook: recons)]):
        torch.testing.assert_close(patched, model(TOKENS))
    assert not torch.allclose(patched, clean)


def test_sae_errors(tmp_path):
    _write_sae(tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    (tmp_path / "sae" / "config.json").write_text(json.dumps({**config, "bilinear_encoder": True}))
    with pytest.raises(CheckpointError, match="bilinear_encoder=true is not supported"):
        load_sae(tmp_path / "sae")
    (tmp_path / "sae" / "config.json").write_text(json.dumps({**config, "expansion": 2}))
    with pytest.raises(CheckpointError, match=r"'w_enc.weight' has shape \(64, 16\) but the config implies \(32, 16\)"):
        load_sae(tmp_path / "sae")
    with pytest.raises(CheckpointError, match="needs point, expansion and k"):
        load_sae("tdooms/ts-medium-scope", layer=1)
