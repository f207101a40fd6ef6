"""Softmax-free bilinear attention (`attention="bilinear"`, spec graphs.md §3) against a reference forward.

The reference below is written from the spec formula with nothing but the state dict:
A[p,q] = mask · (q1_p·k1_q)(q2_p·k2_q) / attn_scale, RoPE as a complex rotation (`_ref_rope`).
"""

import copy

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.config import ConfigError

from ._factories import _ref_norm, _ref_rope, assert_unchanged, hooked_points, randomize_, snapshot

SMALL = dict(n_layers=2, d_model=16, n_heads=2, d_head=4, d_mlp=12, d_vocab=13, n_ctx=10, dtype=torch.float64, seed=0)


def make(**overrides) -> HookedBilinearTransformer:
    cfg = HookedBilinearConfig(**{**SMALL, "attention": "bilinear", **overrides})
    return randomize_(HookedBilinearTransformer(cfg)).eval()


def _norm(x, kind, sd, prefix, eps):
    if kind == "Scale":
        return x * sd[f"{prefix}.w"]
    return _ref_norm(x, kind, sd, prefix, eps)


def reference(model, tokens):
    """Logits and per-layer patterns from the spec, reading only the state dict."""
    cfg, sd = model.cfg, model.state_dict()
    n = tokens.shape[1]
    x = sd["embed.W_E"][tokens]
    if cfg.positional_embedding_type == "standard":
        x = x + sd["pos_embed.W_pos"][:n]
    keep = torch.ones(n, n, dtype=torch.bool).tril()
    patterns = []
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        h = _norm(x, cfg.normalization_type, sd, p + "ln1", cfg.eps)
        proj = {k: torch.einsum("bpd,hde->bphe", h, sd[p + f"attn.W_{k}"]) + sd[p + f"attn.b_{k}"]
                for k in ("Q1", "K1", "Q2", "K2", "V")}
        if cfg.positional_embedding_type == "rotary":
            for k in ("Q1", "K1", "Q2", "K2"):
                proj[k] = _ref_rope(proj[k], cfg.rotary_dim, cfg.rotary_base)
        s1 = torch.einsum("bqhe,bkhe->bhqk", proj["Q1"], proj["K1"])
        s2 = torch.einsum("bqhe,bkhe->bhqk", proj["Q2"], proj["K2"])
        A = torch.where(keep, s1 * s2 / cfg.attn_scale, torch.zeros(()))
        patterns.append(A)
        z = torch.einsum("bhqk,bkhe->bqhe", A, proj["V"])
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not cfg.attn_only:
            h = _norm(x, cfg.normalization_type, sd, p + "ln2", cfg.eps)
            x = x + ((h @ sd[p + "mlp.W_l"] + sd[p + "mlp.b_l"]) * (h @ sd[p + "mlp.W_r"] + sd[p + "mlp.b_r"])) \
                @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    x = _norm(x, cfg.normalization_type, sd, "ln_final", cfg.eps)
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"], patterns


CONFIGS = [
    dict(),
    dict(normalization_type=None, positional_embedding_type="rotary"),
    dict(normalization_type="Scale", positional_embedding_type="rotary", attn_only=True),
    dict(normalization_type="Scale", positional_embedding_type="rotary", rotary_dim=2, mlp_bias=True),
    dict(normalization_type="RMS", positional_embedding_type="none", attn_scale=3.0),
    dict(normalization_type="LNPre", n_heads=1, d_head=8),
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_logits_and_patterns_match_the_spec(overrides):
    model = make(**overrides)
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(0))
    logits, cache = model.run_with_cache(tokens)
    ref_logits, ref_patterns = reference(model, tokens)
    assert torch.allclose(logits, ref_logits, rtol=0, atol=1e-10 * ref_logits.abs().max())
    for layer, A in enumerate(ref_patterns):
        got = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert torch.allclose(got, A, atol=1e-12)
        assert (got.triu(1) == 0).all()  # masked entries are exact zeros, not -inf
        s1, s2 = cache[f"blocks.{layer}.attn.hook_scores1"], cache[f"blocks.{layer}.attn.hook_scores2"]
        assert torch.allclose((s1 * s2 / model.cfg.attn_scale).tril(), got, atol=1e-12)
        attn_out = cache[f"blocks.{layer}.hook_attn_out"]
        heads = cache[f"blocks.{layer}.attn.hook_result"].sum(-2) + model.blocks[layer].attn.b_O
        assert torch.allclose(heads, attn_out, atol=1e-12)
    assert not hooked_points(model)


def test_default_attn_scale_and_stacked_weights():
    model = make(positional_embedding_type="rotary")
    cfg = model.cfg
    assert cfg.attn_scale == cfg.d_head  # sqrt(d_head) per factor
    for name in ("W_Q1", "W_K1", "W_Q2", "W_K2", "W_V"):
        assert getattr(model, name).shape == (2, 2, 16, 4)
    assert model.b_Q2.shape == (2, 2, 4) and model.W_O.shape == (2, 2, 4, 16)
    assert torch.equal(model.W_K2[1], model.blocks[1].attn.W_K2)
    with pytest.raises(AttributeError, match="attention='bilinear' has no 'W_Q'.*W_Q1"):
        model.W_Q
    qk = model.blocks[0].attn.qk_factor(2)
    assert torch.allclose(qk.AB, model.W_Q2[0] @ model.W_K2[0].transpose(-1, -2))
    names = set(model.hook_dict)
    for hook in ("q1", "k1", "q2", "k2", "rot_q1", "rot_k2", "v", "scores1", "scores2", "pattern", "z", "result"):
        assert f"blocks.0.attn.hook_{hook}" in names
    assert "blocks.0.attn.hook_attn_scores" not in names  # no softmax, no pre-softmax score


def test_bad_attention_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"attention must be one of \('softmax', 'bilinear'\), got 'linear'"):
        HookedBilinearConfig(**{**SMALL, "attention": "linear"})


def test_save_load_roundtrip(tmp_path):
    model = make(normalization_type="Scale", positional_embedding_type="rotary")
    model.save_pretrained(str(tmp_path))
    back = HookedBilinearTransformer.from_pretrained(str(tmp_path))
    assert back.cfg.attention == "bilinear" and back.cfg.normalization_type == "Scale"
    tokens = torch.arange(7)[None]
    assert torch.equal(back(tokens), model(tokens))


@pytest.mark.parametrize("norm", ["Scale", "LN", "RMS"])
def test_fold_layer_norm_keeps_the_logits(norm):
    model = make(normalization_type=norm, positional_embedding_type="rotary")
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(1))
    before = model(tokens)
    folded = copy.deepcopy(model).fold_layer_norm()
    assert torch.allclose(folded(tokens), before, atol=1e-10)
    if norm == "Scale":
        assert folded.cfg.normalization_type is None and folded.ln_final is None


def test_channel_scale_norm_on_softmax_model_and_hooks():
    cfg = HookedBilinearConfig(**{**SMALL, "normalization_type": "Scale"})
    model = randomize_(HookedBilinearTransformer(cfg))
    tokens = torch.arange(5)[None]
    _, cache = model.run_with_cache(tokens)
    assert torch.equal(cache["blocks.0.ln1.hook_scale"], torch.ones(1, 5, 1, dtype=torch.float64))
    expected = cache["blocks.0.hook_resid_pre"] * model.blocks[0].ln1.w
    assert torch.allclose(cache["blocks.0.ln1.hook_normalized"], expected)


def test_hook_edit_of_pattern_reaches_the_output():
    model = make()
    tokens = torch.arange(6)[None]
    before = snapshot(model)
    zero = lambda pattern, hook: torch.zeros_like(pattern)  # noqa: E731
    out = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{l}.attn.hook_pattern", zero) for l in range(2)])
    _, cache = model.run_with_cache(tokens)
    # with every pattern zeroed, attention writes only b_O
    resid = cache["hook_embed"] + cache["hook_pos_embed"]
    for l in range(2):
        resid = resid + model.blocks[l].attn.b_O
        h = _norm(resid, "LN", model.state_dict(), f"blocks.{l}.ln2", model.cfg.eps)
        mlp = model.blocks[l].mlp
        resid = resid + ((h @ mlp.W_l + mlp.b_l) * (h @ mlp.W_r + mlp.b_r)) @ mlp.W_out + mlp.b_out
    expected = model.unembed(model.ln_final(resid))
    assert torch.allclose(out, expected, atol=1e-10)
    assert_unchanged(model, before)
    assert not hooked_points(model)


def test_value_bias_folding_is_refused_and_process_weights_stays_exact():
    model = make(normalization_type="LN", positional_embedding_type="rotary")
    before = snapshot(model)
    with pytest.raises(ConfigError, match="fold_value_biases needs softmax attention.*attention='bilinear'"):
        model.fold_value_biases()
    assert_unchanged(model, before)
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(2))
    expected = model(tokens)
    processed = copy.deepcopy(model).process_weights()
    out = processed(tokens)
    # TL's processing centres the unembedding: logits move by a per-position constant only
    assert torch.allclose(out - out.mean(-1, keepdim=True), expected - expected.mean(-1, keepdim=True), atol=1e-10)
