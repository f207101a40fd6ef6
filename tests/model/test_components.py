"""The components against formulas written in the test: full forward, norms, MLP, attention, RoPE."""

import math

import pytest
import torch
import torch.nn.functional as F

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.components import (
    Attention,
    BilinearMLP,
    LayerNorm,
    LayerNormPre,
    RMSNorm,
    RMSNormPre,
    TransformerBlock,
    make_norm,
)
from hooked_bilinear.components.attention import rotary_tables

from ._factories import CONFIGS, config_id, make_cfg, make_model, random_tokens, randomize_, reference_forward


def filled(module, seed=0, std=0.5):
    """A standalone component with every parameter drawn from N(0, std²) (constructors leave W_* empty)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("overrides", CONFIGS, ids=[config_id(c) for c in CONFIGS])
def test_forward_matches_independent_reference(overrides):
    model = make_model(**overrides)
    tokens = random_tokens(model.cfg, batch=3)
    logits = model(tokens)
    assert logits.shape == (3, tokens.shape[1], model.cfg.d_vocab)
    assert rel_err(logits, reference_forward(model, tokens)) < 1e-12


def test_forward_matches_reference_in_float32():
    model = make_model(dtype=torch.float32, positional_embedding_type="rotary", mlp_bias=True)
    tokens = random_tokens(model.cfg)
    assert rel_err(model(tokens), reference_forward(model, tokens)) < 1e-5


def test_one_dimensional_tokens_are_one_batch(model):
    tokens = random_tokens(model.cfg, batch=1)
    assert torch.equal(model(tokens[0]), model(tokens))


def test_causality_future_tokens_do_not_change_the_past(model):
    tokens = random_tokens(model.cfg, batch=1, pos=8)
    edited = tokens.clone()
    edited[0, 5:] = (edited[0, 5:] + 1) % model.cfg.d_vocab
    a, b = model(tokens), model(edited)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-12)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_prefix_of_length_n_gives_the_same_logits(model):
    tokens = random_tokens(model.cfg, batch=2, pos=8)
    assert torch.allclose(model(tokens[:, :4]), model(tokens)[:, :4], atol=1e-12)


# ------------------------------------------------------------------ norms


@pytest.mark.parametrize("cls", [LayerNorm, LayerNormPre, RMSNorm, RMSNormPre])
def test_norm_formulas(cls):
    cfg = make_cfg(eps=1e-3)
    norm = randomize_(cls(cfg), seed=1)
    x = torch.randn(2, 5, cfg.d_model, dtype=torch.float64)
    centred = cls in (LayerNorm, LayerNormPre)
    y = x - x.mean(-1, keepdim=True) if centred else x
    y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-3)
    if cls in (LayerNorm, RMSNorm):
        y = y * norm.w
    if cls is LayerNorm:
        y = y + norm.b
    assert torch.allclose(norm(x), y, atol=1e-13)
    if cls is LayerNorm:  # matches torch's own LayerNorm
        assert torch.allclose(norm(x), F.layer_norm(x, (cfg.d_model,), norm.w, norm.b, eps=1e-3), atol=1e-12)


def test_norm_parameters_per_type():
    assert {n for n, _ in LayerNorm(make_cfg()).named_parameters()} == {"w", "b"}
    assert {n for n, _ in RMSNorm(make_cfg()).named_parameters()} == {"w"}
    assert list(LayerNormPre(make_cfg()).parameters()) == []
    assert list(RMSNormPre(make_cfg()).parameters()) == []
    assert make_norm(make_cfg(normalization_type=None)) is None


# ------------------------------------------------------------------ MLP


@pytest.mark.parametrize("gate", [None, "silu", "relu", "gelu"])
def test_mlp_formula(gate):
    cfg = make_cfg(gate=gate, mlp_bias=True)
    mlp = filled(BilinearMLP(cfg), std=1.0)
    x = torch.randn(2, 3, cfg.d_model, dtype=torch.float64)
    act = {None: lambda t: t, "silu": F.silu, "relu": F.relu, "gelu": F.gelu}[gate]
    expected = (act(x @ mlp.W_l + mlp.b_l) * (x @ mlp.W_r + mlp.b_r)) @ mlp.W_out + mlp.b_out
    assert torch.allclose(mlp(x), expected, atol=1e-12)


def test_mlp_is_a_quadratic_form_without_biases():
    """MLP(x+y) = B(x,x) + B(y,y) + B(x,y) + B(y,x) and MLP(c x) = c² MLP(x) (spec §1, §5.3)."""
    cfg = make_cfg()
    mlp = BilinearMLP(cfg)
    for name, p in mlp.named_parameters():
        torch.nn.init.normal_(p) if name.startswith("W") else torch.nn.init.zeros_(p)
    x, y = torch.randn(2, cfg.d_model, dtype=torch.float64)

    def cross(a, b):
        return ((a @ mlp.W_l) * (b @ mlp.W_r)) @ mlp.W_out

    assert torch.allclose(mlp(x + y), mlp(x) + mlp(y) + cross(x, y) + cross(y, x), atol=1e-10)
    assert torch.allclose(mlp(3 * x), 9 * mlp(x), atol=1e-10)


def test_mlp_tl_aliases():
    mlp = BilinearMLP(make_cfg())
    assert mlp.W_gate is mlp.W_l and mlp.W_in is mlp.W_r and mlp.b_in is mlp.b_r


# ------------------------------------------------------------------ attention


def test_attention_formula_and_causal_pattern():
    cfg = make_cfg(n_heads=3, d_head=5)
    attn = filled(Attention(cfg), seed=2)
    x = torch.randn(2, 6, cfg.d_model, dtype=torch.float64)
    q = torch.einsum("bpd,hde->bhpe", x, attn.W_Q) + attn.b_Q[:, None]
    k = torch.einsum("bpd,hde->bhpe", x, attn.W_K) + attn.b_K[:, None]
    v = torch.einsum("bpd,hde->bhpe", x, attn.W_V) + attn.b_V[:, None]
    scores = q @ k.transpose(-1, -2) / math.sqrt(5)
    pattern = scores.masked_fill(torch.ones(6, 6).triu(1).bool(), -torch.inf).softmax(-1)
    out = torch.einsum("bhqk,bhke,hed->bqd", pattern, v, attn.W_O) + attn.b_O
    assert torch.allclose(attn(x), out, atol=1e-12)


def test_attn_scale_is_used():
    cfg = make_cfg(attn_scale=1.0)
    model = randomize_(HookedBilinearTransformer(cfg))
    tokens = random_tokens(cfg)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "attn.hook_" in n)
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k)
    tril = torch.ones(tokens.shape[1], tokens.shape[1]).tril().bool()
    assert torch.allclose(cache["blocks.0.attn.hook_attn_scores"][..., tril], scores[..., tril], atol=1e-12)


def test_per_head_result_path_equals_fused_path():
    """attn_out is computed with one matmul unless hook_result is hooked; both must agree."""
    model = make_model()
    tokens = random_tokens(model.cfg)
    plain = model(tokens)
    with model.hooks([("blocks.0.attn.hook_result", lambda t, hook: None)]):
        hooked = model(tokens)
    assert torch.allclose(plain, hooked, atol=1e-12)


def test_hook_result_edits_in_place_or_returned_agree_with_editing_z():
    """hook_result is a view of the per-head products; an in-place edit must reach attn_out like a
    returned edit, and zeroing head 1 there equals zeroing its z."""
    model = make_model()
    tokens = random_tokens(model.cfg)

    def in_place(t, hook):
        t[:, :, 1] = 0

    def returned(t, hook):
        t = t.clone()
        t[:, :, 1] = 0
        return t

    name = "blocks.0.attn."
    a = model.run_with_hooks(tokens, fwd_hooks=[(name + "hook_result", in_place)])
    b = model.run_with_hooks(tokens, fwd_hooks=[(name + "hook_result", returned)])
    c = model.run_with_hooks(tokens, fwd_hooks=[(name + "hook_z", in_place)])
    assert not torch.allclose(a, model(tokens), atol=1e-6)
    assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-12)


def test_rotary_tables_match_the_definition():
    cos, sin = rotary_tables(n_ctx=7, rotary_dim=6, base=100.0, dtype=torch.float64)
    inv = 100.0 ** (-torch.arange(3, dtype=torch.float64) * 2 / 6)
    angles = torch.arange(7, dtype=torch.float64)[:, None] * inv
    assert torch.allclose(cos, torch.cat([angles.cos()] * 2, -1), atol=0)
    assert torch.allclose(sin, torch.cat([angles.sin()] * 2, -1), atol=0)


def test_rotary_scores_depend_only_on_relative_position():
    """With RoPE (no biases), q_p·k_s depends on p - s: shifting both positions leaves the score."""
    cfg = make_cfg(positional_embedding_type="rotary", attn_bias=False, normalization_type=None, n_layers=1)
    model = make_model(**{k: getattr(cfg, k) for k in ("positional_embedding_type", "normalization_type", "n_layers")})
    with torch.no_grad():
        for name in ("b_Q", "b_K"):
            getattr(model.blocks[0].attn, name).zero_()
    tokens = torch.tensor([[3, 4, 5, 3, 4, 5, 3, 4]])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_attn_scores")
    s = cache["blocks.0.attn.hook_attn_scores"][0]
    assert torch.allclose(s[:, 4, 1], s[:, 7, 4], atol=1e-10)  # same tokens (4,4), same offset 3
    assert torch.allclose(s[:, 3, 0], s[:, 6, 3], atol=1e-10)


def test_block_is_pre_norm_residual():
    cfg = make_cfg()
    block = filled(TransformerBlock(cfg, 0), std=0.3)
    x = torch.randn(2, 4, cfg.d_model, dtype=torch.float64)
    mid = x + block.attn(block.ln1(x))
    assert torch.allclose(block(x), mid + block.mlp(block.ln2(mid)), atol=1e-12)


def test_zero_layer_model_is_a_bigram_table():
    model = make_model(n_layers=0, normalization_type=None, positional_embedding_type="none")
    tokens = random_tokens(model.cfg)
    assert torch.allclose(model(tokens), model.W_E[tokens] @ model.W_U + model.b_U, atol=1e-12)


def test_summary_names_the_architecture():
    text = make_model(positional_embedding_type="rotary", gate="silu").summary()
    for fragment in ("n_layers=2", "d_model=16", "d_mlp=24", "pos=rotary", "gate=silu", "parameters"):
        assert fragment in text


def test_stop_and_start_at_layer_compose(model, tokens):
    resid = model(tokens, stop_at_layer=1)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    assert torch.equal(resid, cache["blocks.1.hook_resid_pre"])
    assert torch.allclose(model(resid, start_at_layer=1), model(tokens), atol=1e-12)
    loss = model(resid, start_at_layer=1, tokens=tokens, return_type="loss")
    assert torch.allclose(loss, model(tokens, return_type="loss"), atol=1e-12)


def test_return_types(model, tokens):
    logits = model(tokens)
    loss = model(tokens, return_type="loss")
    both = model(tokens, return_type="both")
    assert model(tokens, return_type=None) is None
    assert torch.equal(both[0], logits) and torch.equal(both[1], loss)
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert torch.allclose(loss, -logp.mean(), atol=1e-12)
    per_token = model(tokens, return_type="loss", loss_per_token=True)
    assert per_token.shape == (tokens.shape[0], tokens.shape[1] - 1)
    assert torch.allclose(per_token, -logp, atol=1e-12)


def test_config_device_and_dtype_are_honoured():
    model = HookedBilinearTransformer(HookedBilinearConfig(**{**make_cfg().to_dict(), "dtype": "float32"}))
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
