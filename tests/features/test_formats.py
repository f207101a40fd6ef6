"""SAELens and scope files: written by us and read back, hand-written SAELens configs read, bad files refused."""

import json

import pytest
import torch
from safetensors.torch import save_file

from hooked_bilinear import CheckpointError
from hooked_bilinear.features import SAE, SAEConfig, load_sae


def _sae(arch="topk", **kw):
    k = 3 if arch == "topk" else None
    sae = SAE(SAEConfig(d_in=8, d_sae=16, k=k, hook_name="blocks.1.hook_mlp_out", architecture=arch, **kw), seed=0)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return sae


X = torch.randn(5, 8, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_saelens_round_trip(tmp_path, arch):
    sae = _sae(arch, normalize=2.0)  # the scale is folded into the weights on save
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}[arch]
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_mlp_out" and cfg["d_sae"] == 16
    back = load_sae(tmp_path / "s")
    with torch.no_grad():
        torch.testing.assert_close(back(X), sae(X))
    assert load_sae(tmp_path / "s", dtype="float64").W_enc.dtype == torch.float64


def test_saelens_transcoder_round_trip(tmp_path):
    sae = _sae("relu", hook_name_out="blocks.1.hook_resid_post", apply_b_dec_to_input=False)
    sae.save(tmp_path / "t")
    assert json.loads((tmp_path / "t" / "cfg.json").read_text())["architecture"] == "transcoder"
    back = load_sae(tmp_path / "t")
    assert back.cfg.hook_name_out == "blocks.1.hook_resid_post"
    with torch.no_grad():
        torch.testing.assert_close(back(X), sae(X))


def _write_saelens(folder, config, tensors):
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "sae_weights.safetensors"))


def test_pre_6_flat_topk_config_and_log_threshold(tmp_path):
    g = torch.Generator().manual_seed(0)
    T = {"W_enc": torch.randn(8, 16, generator=g), "W_dec": torch.randn(16, 8, generator=g),
         "b_enc": torch.randn(16, generator=g), "b_dec": torch.randn(8, generator=g)}
    flat = {"d_in": 8, "d_sae": 16, "hook_point": "blocks.0.hook_resid_pre", "architecture": "standard",
            "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}, "normalize_activations": "none",
            "apply_b_dec_to_input": True, "model_name": "x"}
    _write_saelens(tmp_path / "a", flat, T)
    sae = load_sae(tmp_path / "a")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 4 and sae.cfg.hook_name == "blocks.0.hook_resid_pre"
    pre = (X - T["b_dec"]) @ T["W_enc"] + T["b_enc"]
    top = pre.topk(4, dim=-1)
    ref = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(X), ref)
    v6 = {"architecture": "jumprelu", "d_in": 8, "d_sae": 16, "apply_b_dec_to_input": False,
          "metadata": {"hook_name": "blocks.0.hook_resid_pre", "sae_lens_version": "6.5.0"}}
    _write_saelens(tmp_path / "b", v6, {**T, "log_threshold": torch.zeros(16)})
    sae = load_sae(tmp_path / "b")
    pre = X @ T["W_enc"] + T["b_enc"]
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(X), pre * (pre > 1))  # threshold = exp(0) = 1


def test_scope_round_trip_keeps_the_no_relu_topk(tmp_path):
    sae = _sae("topk", topk_relu=False)
    sae.save(tmp_path / "sc", format="scope")
    assert json.loads((tmp_path / "sc" / "config.json").read_text())["point"] == ["mlp_out", 1]
    back = load_sae(tmp_path / "sc")
    assert back.cfg.topk_relu is False
    with torch.no_grad():
        torch.testing.assert_close(back(X), sae(X))


def test_bad_files_are_named(tmp_path):
    base = {"architecture": "standard", "d_in": 8, "d_sae": 16, "metadata": {"hook_name": "blocks.0.hook_resid_pre"}}
    g = torch.Generator().manual_seed(0)
    T = {"W_enc": torch.randn(8, 16, generator=g), "W_dec": torch.randn(16, 8, generator=g),
         "b_enc": torch.randn(16, generator=g), "b_dec": torch.randn(8, generator=g)}
    _write_saelens(tmp_path / "g", {**base, "architecture": "gated"}, T)
    with pytest.raises(CheckpointError, match="architecture='gated' is not supported"):
        load_sae(tmp_path / "g")
    _write_saelens(tmp_path / "n", {**base, "normalize_activations": "layer_norm", "reshape_activations": "hook_z"}, T)
    with pytest.raises(CheckpointError, match="normalize_activations='layer_norm', reshape_activations='hook_z'"):
        load_sae(tmp_path / "n")
    _write_saelens(tmp_path / "m", {**base, "d_sae": 32}, T)
    with pytest.raises(CheckpointError, match=r"'W_dec' has shape \(16, 8\) but the config expects \(32, 8\)"):
        load_sae(tmp_path / "m")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cfg.json").write_text(json.dumps(base))
    (tmp_path / "c" / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_sae(tmp_path / "c")
    (tmp_path / "e").mkdir()
    with pytest.raises(CheckpointError, match="neither cfg.json"):
        load_sae(tmp_path / "e")
    with pytest.raises(CheckpointError, match="no bundled dictionary 'tiny-lm/nope'"):
        load_sae("tiny-lm/nope")


def test_formats_refuse_what_they_cannot_express(tmp_path):
    with pytest.raises(CheckpointError, match="no TopK transcoder"):
        _sae("topk", hook_name_out="blocks.1.hook_resid_post", apply_b_dec_to_input=False).save(tmp_path / "x")
    with pytest.raises(CheckpointError, match="topk_relu=True"):
        _sae("topk").save(tmp_path / "y", format="scope")
    with pytest.raises(CheckpointError, match="format='bin'"):
        _sae("topk").save(tmp_path / "z", format="bin")
    assert not any(tmp_path.iterdir())


def test_saelens_folder_in_a_hub_repo_loads_offline(tmp_path):
    from tests.loading._checkpoints import put_in_hub_cache

    sae = _sae("relu")
    sae.save(tmp_path / "src")
    cache = tmp_path / "hf"
    put_in_hub_cache(cache, "someone/tiny-saes", tmp_path / "src", subfolder="blocks.1.hook_mlp_out")
    back = load_sae("someone/tiny-saes/blocks.1.hook_mlp_out", cache_dir=cache)
    assert back.cfg.architecture == "relu" and back.cfg.hook_name == "blocks.1.hook_mlp_out"
    with torch.no_grad():
        torch.testing.assert_close(back(X), sae(X))
