"""Both language-model formats, loaded by Hub id from a pre-populated HF cache (offline), against the
independent reference forward of `_reference.py`."""

import json

import pytest
import torch

from hooked_bilinear import CheckpointError, HookedBilinearTransformer, NotBilinearError
from hooked_bilinear.loading import load_pretrained

from ._checkpoints import ABSENT, N_VOCAB, put_in_hub_cache, write_2024_06, write_2024_10
from ._reference import forward_2024_06, forward_2024_10, raw

TOL = 1e-5
TOKENS = torch.tensor([[1, 5, 9, 2, 33, 7, 0, 39, 12, 3], [4, 4, 4, 18, 21, 2, 30, 11, 6, 8]])


def _load_from_cache(folder, cache_dir, repo="tdooms/ts-medium", **kwargs):
    put_in_hub_cache(cache_dir, repo, folder)
    return load_pretrained(repo, cache_dir=cache_dir, tokenizer=False, **kwargs)


def _config(folder):
    return json.loads((folder / "config.json").read_text())


CURRENT = {
    "plain": {},
    "bias": dict(bias=True),
    "silu": dict(gate="silu"),
    "scale-false": dict(scale_attn=False),
    "scale-true": dict(scale_attn=True),
    "stray-norm-linear": dict(stray=True),
    "no-norm": dict(normalization=False, embed_std=0.5),  # no norm: keep the residual O(1) for float32
    "3-layers-4-heads": dict(n_layer=3, n_head=4),
}


@pytest.mark.parametrize("variant", list(CURRENT), ids=list(CURRENT))
def test_current_format_matches_reference(variant, tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", **CURRENT[variant])
    model = _load_from_cache(folder, cache_dir)
    expected = forward_2024_10(_config(folder), raw(folder), TOKENS)
    assert (model(TOKENS).double() - expected).abs().max() <= TOL
    assert model.cfg.dtype == torch.float32


def test_current_format_config_fields(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", scale_attn=False)
    model = _load_from_cache(folder, cache_dir)
    c = model.cfg
    assert (c.model_name, c.tokenizer_name) == ("tdooms/ts-medium", "ts-4096")
    assert (c.normalization_type, c.eps, c.positional_embedding_type) == ("RMSPre", 1e-8, "rotary")
    assert (c.rotary_dim, c.rotary_base, c.d_head, c.d_vocab, c.gate) == (8, 10000, 8, N_VOCAB, None)
    assert model.pos_embed is None and c.is_bilinear


def test_layouts_are_the_documented_transposes(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", scale_attn=False)
    model = _load_from_cache(folder, cache_dir)
    T = raw(folder)
    qkv = T["transformer.h.1.attn.qkv.weight"].float()
    W_K = model.blocks[1].attn.W_K  # [n_heads, d_model, d_head]; head 1 = rows 16 + 8..15 of qkv
    torch.testing.assert_close(W_K[1], qkv[16 + 8:16 + 16].T)
    torch.testing.assert_close(model.blocks[1].attn.W_O[0], T["transformer.h.1.attn.o.weight"].float()[:, :8].T)
    w = T["transformer.h.0.mlp.w.weight"].float()
    torch.testing.assert_close(model.blocks[0].mlp.W_l, w[:24].T)
    torch.testing.assert_close(model.blocks[0].mlp.W_r, w[24:].T)
    torch.testing.assert_close(model.W_U, T["lm_head.weight"].float().T)


@pytest.mark.parametrize("flag", [ABSENT, True, False], ids=["absent", "true", "false"])
@pytest.mark.parametrize("override", [None, True, False], ids=["no-override", "override-true", "override-false"])
def test_scale_attn_rule(flag, override, tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", scale_attn=flag)
    model = _load_from_cache(folder, cache_dir, scale_attn=override)
    applied = override if override is not None else (flag is not False)
    expected = forward_2024_10(_config(folder), raw(folder), TOKENS, scale=applied)
    assert (model(TOKENS).double() - expected).abs().max() <= TOL
    wrong = forward_2024_10(_config(folder), raw(folder), TOKENS, scale=not applied)
    assert (model(TOKENS).double() - wrong).abs().max() > 1e-3


def test_swiglu_loads_but_is_not_bilinear(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", gate="silu")
    model = _load_from_cache(folder, cache_dir, repo="tdooms/ts-medium-swiglu")
    assert model.cfg.gate == "silu" and not model.cfg.is_bilinear
    with pytest.raises(NotBilinearError):
        model.bilinear(0)


def test_plain_mlp_in_current_format_is_refused(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt")
    config = _config(folder)
    config["bilinear"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bilinear=false.*not supported"):
        _load_from_cache(folder, cache_dir)


OLDER = {
    "rms": dict(normalization="rms"),
    "rms-bias": dict(normalization="rms", norm_bias=True),
    "ln": dict(normalization="ln"),
    "ln-bias": dict(normalization="ln", norm_bias=True),
    "no-norm": dict(normalization=None, embed_std=0.5),
    "glp": dict(mlp="glp"),
    "mlp-bias": dict(mlp_bias=True),
    "learned-positions": dict(learned_pos=True),
}


@pytest.mark.parametrize("variant", list(OLDER), ids=list(OLDER))
def test_older_format_matches_reference(variant, tmp_path, cache_dir):
    folder = write_2024_06(tmp_path / "ckpt", **OLDER[variant])
    model = _load_from_cache(folder, cache_dir, repo="tdooms/TinyStories-2-16")
    expected = forward_2024_06(_config(folder), raw(folder), TOKENS)
    assert (model(TOKENS).double() - expected).abs().max() <= TOL
    assert model.cfg.tokenizer_name == f"TinyStories-{N_VOCAB}"


@pytest.mark.parametrize("normalization", ["rms", "ln"])
def test_fold_ln_keeps_the_logits(normalization, tmp_path, cache_dir):
    folder = write_2024_06(tmp_path / "ckpt", normalization=normalization, norm_bias=True)
    model = _load_from_cache(folder, cache_dir, fold_ln=True)
    assert model.cfg.normalization_type == {"rms": "RMSPre", "ln": "LNPre"}[normalization]
    expected = forward_2024_06(_config(folder), raw(folder), TOKENS)
    assert (model(TOKENS).double() - expected).abs().max() <= TOL


def test_older_plain_gelu_mlp_is_refused(tmp_path, cache_dir):
    folder = write_2024_06(tmp_path / "ckpt", mlp="glp")
    config = _config(folder)
    config["mlp"] = "mlp"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="mlp='mlp'.*not supported"):
        _load_from_cache(folder, cache_dir)


def test_local_folder_and_file_load_like_the_hub(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "ckpt", bias=True)
    from_hub = _load_from_cache(folder, cache_dir)
    from_folder = load_pretrained(folder, tokenizer=False)
    from_file = HookedBilinearTransformer.from_pretrained(str(folder / "model.safetensors"), tokenizer=False)
    for model in (from_folder, from_file):
        assert torch.equal(model(TOKENS), from_hub(TOKENS))
    assert from_folder.cfg.model_name == str(folder)
