"""Hook points: names, firing, edits, the identities between cached activations, and the cache API."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from hooked_bilinear import HookNameError, HookReturnError, InputError
from hooked_bilinear._tl import ActivationCache, get_act_name, lm_cross_entropy_loss

from ._factories import CONFIGS, GATE_REF, _ref_rope, config_id, make_model, random_tokens

CONFIG_IDS = [config_id(c) for c in CONFIGS]


def expected_hook_names(cfg) -> set[str]:
    """The TransformerLens hook vocabulary (spec/transformer_lens.md) for this architecture."""
    names = {"hook_embed"}
    if cfg.positional_embedding_type == "standard":
        names.add("hook_pos_embed")
    norms = cfg.normalization_type is not None
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}."
        names |= {b + h for h in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_resid_post")}
        names |= {b + "attn." + h for h in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern",
                                             "hook_z", "hook_result")}
        if cfg.positional_embedding_type == "rotary":
            names |= {b + "attn.hook_rot_q", b + "attn.hook_rot_k"}
        if norms:
            names |= {b + "ln1.hook_scale", b + "ln1.hook_normalized"}
        if not cfg.attn_only:
            names |= {b + "hook_mlp_in", b + "hook_mlp_out", b + "mlp.hook_pre", b + "mlp.hook_pre_linear",
                      b + "mlp.hook_post"}
            if norms:
                names |= {b + "ln2.hook_scale", b + "ln2.hook_normalized"}
    if norms:
        names |= {"ln_final.hook_scale", "ln_final.hook_normalized"}
    return names


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
def test_hook_names_are_the_transformer_lens_vocabulary(overrides):
    model = make_model(**overrides)
    assert set(model.hook_dict) == expected_hook_names(model.cfg)


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
def test_every_hook_fires_exactly_once_per_forward(overrides):
    model = make_model(**overrides)
    counts = Counter()

    def count(tensor, hook):
        counts[hook.name] += 1

    tokens = random_tokens(model.cfg)
    model.run_with_hooks(tokens, fwd_hooks=[(lambda name: True, count)])
    assert counts == Counter({name: 1 for name in model.hook_dict})
    counts.clear()
    model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(lambda name: True, count)])
    assert counts == Counter({name: 1 for name in model.hook_dict})


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
def test_run_with_cache_caches_every_hook(overrides):
    model = make_model(**overrides)
    _, cache = model.run_with_cache(random_tokens(model.cfg))
    assert set(cache.keys()) == set(model.hook_dict)


def test_common_tl_shorthands_resolve():
    model = make_model(positional_embedding_type="rotary")
    for short in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_in", "q", "k", "v", "z",
                  "result", "pattern", "attn_scores", "pre", "pre_linear", "post", "rot_q", "rot_k"):
        assert get_act_name(short, 1) in model.hook_dict, short
    for short in ("embed",):
        assert get_act_name(short) in model.hook_dict


# ------------------------------------------------------------------ edits take effect

EDIT_CONFIGS = [dict(mlp_bias=True), dict(normalization_type="RMS", positional_embedding_type="rotary", gate="silu")]
EDIT_CASES = [(c, name) for c in EDIT_CONFIGS for name in sorted(make_model(**c).hook_dict)]


@pytest.mark.parametrize("overrides, name", EDIT_CASES, ids=[f"{config_id(c)}:{n}" for c, n in EDIT_CASES])
def test_a_hook_returning_an_edited_tensor_changes_the_output(overrides, name):
    model = make_model(**overrides)
    tokens = random_tokens(model.cfg)
    clean = model(tokens)
    gen = torch.Generator().manual_seed(0)

    def perturb(tensor, hook):
        return tensor + 0.5 * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype)

    edited = model.run_with_hooks(tokens, fwd_hooks=[(name, perturb)])
    assert (edited - clean).abs().max() > 1e-6
    assert torch.equal(model(tokens), clean)  # and the edit is gone afterwards


def test_an_edit_is_what_downstream_hooks_and_the_cache_see(model, tokens):
    def ablate(tensor, hook):
        return torch.zeros_like(tensor)

    with model.hooks(fwd_hooks=[("blocks.0.hook_mlp_out", ablate)]):
        _, cache = model.run_with_cache(tokens)
    assert torch.count_nonzero(cache["blocks.0.hook_mlp_out"]) == 0
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_mid"])


def test_in_place_edit_of_mlp_in_does_not_leak_into_resid_mid(model, tokens):
    def zero_(tensor, hook):
        tensor.zero_()

    with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.0.hook_mlp_in", zero_)]):
        _, cache = model.run_with_cache(tokens)
    assert torch.count_nonzero(cache["blocks.0.hook_resid_mid"]) > 0
    expected = cache["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"]
    assert torch.allclose(cache["blocks.0.hook_resid_post"], expected, atol=1e-12)


# ------------------------------------------------------------------ identities between activations


def _norm_input_check(cache, prefix, x, cfg, norm):
    """hook_scale and hook_normalized of one norm against its input x."""
    if cfg.normalization_type is None:
        return x
    centred = x - x.mean(-1, keepdim=True) if cfg.normalization_type in ("LN", "LNPre") else x
    scale = cache[f"{prefix}.hook_scale"]
    assert torch.allclose(scale, (centred.pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt(), atol=1e-12)
    y = centred / scale
    if hasattr(norm, "w"):
        y = y * norm.w
    if hasattr(norm, "b"):
        y = y + norm.b
    assert torch.allclose(cache[f"{prefix}.hook_normalized"], y, atol=1e-12)
    return cache[f"{prefix}.hook_normalized"]


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
def test_cached_activations_satisfy_the_block_identities(overrides):
    model = make_model(**overrides)
    cfg = model.cfg
    tokens = random_tokens(cfg, batch=2, pos=6)
    logits, cache = model.run_with_cache(tokens)
    tol = dict(atol=1e-10, rtol=1e-10)
    n = tokens.shape[1]
    above = torch.ones(n, n, dtype=torch.bool).triu(1)

    resid = cache["hook_embed"]
    assert torch.equal(resid, model.W_E[tokens])
    if cfg.positional_embedding_type == "standard":
        assert torch.equal(cache["hook_pos_embed"], model.W_pos[:n].expand(2, n, -1))
        resid = resid + cache["hook_pos_embed"]
    for layer, block in enumerate(model.blocks):
        c = lambda name: cache[f"blocks.{layer}.{name}"]  # noqa: E731
        assert torch.allclose(c("hook_resid_pre"), resid, **tol)
        attn_in = _norm_input_check(cache, f"blocks.{layer}.ln1", c("hook_resid_pre"), cfg, block.ln1)
        attn = block.attn
        q = torch.einsum("bpd,hde->bphe", attn_in, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpd,hde->bphe", attn_in, attn.W_K) + attn.b_K
        assert torch.allclose(c("attn.hook_q"), q, **tol) and torch.allclose(c("attn.hook_k"), k, **tol)
        assert torch.allclose(c("attn.hook_v"), torch.einsum("bpd,hde->bphe", attn_in, attn.W_V) + attn.b_V, **tol)
        if cfg.positional_embedding_type == "rotary":
            q, k = _ref_rope(q, cfg.rotary_dim, cfg.rotary_base), _ref_rope(k, cfg.rotary_dim, cfg.rotary_base)
            assert torch.allclose(c("attn.hook_rot_q"), q, **tol) and torch.allclose(c("attn.hook_rot_k"), k, **tol)
        scores = c("attn.hook_attn_scores")
        assert torch.allclose(scores[..., ~above], (torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head))[..., ~above], **tol)
        assert torch.all(scores[..., above] == -torch.inf)
        pattern = c("attn.hook_pattern")
        assert torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-12)  # rows sum to 1
        assert torch.all(pattern[..., above] == 0)  # causal
        assert torch.all(pattern >= 0)
        assert torch.allclose(pattern, scores.softmax(-1), **tol)
        assert torch.allclose(c("attn.hook_z"), torch.einsum("bhqk,bkhe->bqhe", pattern, c("attn.hook_v")), **tol)
        assert torch.allclose(c("attn.hook_result"), torch.einsum("bphe,hed->bphd", c("attn.hook_z"), attn.W_O), **tol)
        # Σ_h hook_result + b_O = attn_out;  resid_mid = resid_pre + attn_out
        assert torch.allclose(c("attn.hook_result").sum(-2) + attn.b_O, c("hook_attn_out"), **tol)
        assert torch.allclose(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"), **tol)
        if cfg.attn_only:
            assert torch.equal(c("hook_resid_post"), c("hook_resid_mid"))
        else:
            mlp = block.mlp
            assert torch.equal(c("hook_mlp_in"), c("hook_resid_mid"))
            mlp_in = _norm_input_check(cache, f"blocks.{layer}.ln2", c("hook_mlp_in"), cfg, block.ln2)
            assert torch.allclose(c("mlp.hook_pre"), mlp_in @ mlp.W_l + mlp.b_l, **tol)
            assert torch.allclose(c("mlp.hook_pre_linear"), mlp_in @ mlp.W_r + mlp.b_r, **tol)
            # bilinear: hook_post = hook_pre * hook_pre_linear (gated: gate(hook_pre) * hook_pre_linear)
            expected_post = GATE_REF[cfg.gate](c("mlp.hook_pre")) * c("mlp.hook_pre_linear")
            assert torch.allclose(c("mlp.hook_post"), expected_post, **tol)
            assert torch.allclose(c("hook_mlp_out"), c("mlp.hook_post") @ mlp.W_out + mlp.b_out, **tol)
            assert torch.allclose(c("hook_resid_post"), c("hook_resid_mid") + c("hook_mlp_out"), **tol)
        resid = c("hook_resid_post")
    final = _norm_input_check(cache, "ln_final", resid, cfg, model.ln_final)
    assert torch.allclose(logits, final @ model.W_U + model.b_U, **tol)


# ------------------------------------------------------------------ run_with_cache


def test_run_with_cache_returns_a_transformer_lens_activation_cache(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert cache.model is model
    assert torch.allclose(logits, model(tokens), atol=1e-12)  # per-head path: same math, other rounding
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])  # TL shorthand indexing
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    assert not any(t.requires_grad for t in cache.values())


@pytest.mark.parametrize(
    "names_filter, expected",
    [
        ("blocks.0.mlp.hook_post", {"blocks.0.mlp.hook_post"}),
        (["hook_embed", "blocks.1.hook_resid_post"], {"hook_embed", "blocks.1.hook_resid_post"}),
        (("hook_embed",), {"hook_embed"}),
        (lambda name: name.endswith("hook_scale"),
         {"blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_scale", "blocks.1.ln1.hook_scale",
          "blocks.1.ln2.hook_scale", "ln_final.hook_scale"}),
    ],
    ids=["str", "list", "tuple", "callable"],
)
def test_names_filter(model, tokens, names_filter, expected):
    _, cache = model.run_with_cache(tokens, names_filter=names_filter)
    assert set(cache.keys()) == expected


@pytest.mark.parametrize("bad", ["hook_embd", ["hook_embed", "blocks.0.hook_resid_pro"]])
def test_names_filter_with_unknown_name_raises(model, tokens, bad):
    with pytest.raises(HookNameError, match="did you mean"):
        model.run_with_cache(tokens, names_filter=bad)


def test_remove_batch_dim(model, tokens):
    _, batched = model.run_with_cache(tokens[:1])
    _, single = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    _, one_d = model.run_with_cache(tokens[0, :], remove_batch_dim=True)  # tokens [pos]
    assert single.has_batch_dim is False
    for name in ("hook_embed", "blocks.0.attn.hook_pattern", "ln_final.hook_scale"):
        assert torch.equal(single[name], batched[name][0])
        assert torch.equal(one_d[name], batched[name][0])


def test_remove_batch_dim_needs_batch_size_one(model, tokens):
    with pytest.raises(InputError, match="batch size 1"):
        model.run_with_cache(tokens, remove_batch_dim=True)


def test_incl_bwd_caches_true_gradients(model, tokens):
    loss, cache = model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    grads = {k for k in cache.keys() if k.endswith("_grad")}
    assert grads == {f"{name}_grad" for name in model.hook_dict}
    resid = cache["blocks.1.hook_resid_post"].clone().requires_grad_(True)
    manual = lm_cross_entropy_loss(model.unembed(model.ln_final(resid)), tokens)
    assert torch.allclose(manual, loss)
    (expected,) = torch.autograd.grad(manual, resid)
    assert torch.allclose(cache["blocks.1.hook_resid_post_grad"], expected, atol=1e-12)
    assert not any(hp.bwd_hooks for hp in model.hook_dict.values())


def test_incl_bwd_needs_a_scalar_output(model, tokens):
    with pytest.raises(InputError, match="return_type='loss'"):
        model.run_with_cache(tokens, incl_bwd=True)


def test_cache_device_offload(model, tokens):
    _, on_model = model.run_with_cache(tokens)
    _, offloaded = model.run_with_cache(tokens, device="cpu")
    assert all(t.device.type == "cpu" for t in offloaded.values())
    for name in on_model.keys():
        assert torch.equal(on_model[name], offloaded[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cache_offload_from_a_gpu_model(tokens):
    model = make_model(device="cuda")
    logits, offloaded = model.run_with_cache(tokens, device="cpu")  # CPU tokens are moved to the model
    assert logits.device.type == "cuda"
    assert all(t.device.type == "cpu" for t in offloaded.values())
    _, on_gpu = model.run_with_cache(tokens)
    for name in offloaded.keys():
        assert on_gpu[name].device.type == "cuda"
        assert torch.allclose(on_gpu[name].cpu(), offloaded[name], atol=1e-12)


# ------------------------------------------------------------------ backward hooks


def test_backward_hooks_fire_including_bwd_only_hook_result(model, tokens):
    seen = {}

    def grab(grad, hook):
        seen[hook.name] = grad.clone()

    names = ["blocks.0.attn.hook_result", "blocks.1.hook_resid_post"]
    with model.hooks(bwd_hooks=[(n, grab) for n in names]):
        model(tokens, return_type="loss").backward()
    assert set(seen) == set(names)
    assert seen["blocks.0.attn.hook_result"].shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    model.zero_grad()


def test_a_backward_hook_can_edit_the_gradient(model, tokens):
    model(tokens, return_type="loss").backward()
    clean = model.W_E.grad.clone()
    model.zero_grad()
    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_pre", lambda g, hook: 2 * g)]):
        model(tokens, return_type="loss").backward()
    assert not torch.allclose(model.W_E.grad, clean)
    model.zero_grad()


# ------------------------------------------------------------------ unknown names and bad hook returns


@pytest.mark.parametrize("how", ["run_with_hooks", "hooks", "add_hook"])
def test_unknown_hook_name_raises_with_a_suggestion(model, tokens, how):
    bad = "blocks.0.mlp.hook_psot"
    with pytest.raises(HookNameError) as info:
        if how == "run_with_hooks":
            model.run_with_hooks(tokens, fwd_hooks=[(bad, lambda t, hook: None)])
        elif how == "hooks":
            with model.hooks(fwd_hooks=[(bad, lambda t, hook: None)]):
                pass
        else:
            model.add_hook(bad, lambda t, hook: None)
    message = str(info.value)
    assert repr(bad) in message and "did you mean" in message and "'blocks.0.mlp.hook_post'" in message
    assert isinstance(info.value, KeyError)  # TL code catching KeyError keeps working


def test_unrelated_hook_name_points_to_hook_dict(model):
    with pytest.raises(HookNameError, match=r"hook_dict\.keys\(\)"):
        model.add_hook("zzzzzzzzzzzzzzzzzzzz", lambda t, hook: None)


@pytest.mark.parametrize(
    "hook, fragments",
    [
        (lambda t, hook: t[:, :1], ["returned shape (2, 1, 16)", "expected shape (2, 7, 16) dtype torch.float64"]),
        (lambda t, hook: t.float(), ["dtype torch.float32", "expected shape (2, 7, 16) dtype torch.float64"]),
        (lambda t, hook: t.tolist(), ["returned list", "return None or a Tensor of shape (2, 7, 16)"]),
        (lambda t, hook: 0.0, ["returned float", "return None or a Tensor of shape (2, 7, 16)"]),
    ],
    ids=["shape", "dtype", "list", "scalar"],
)
def test_a_hook_returning_the_wrong_thing_raises(model, tokens, hook, fragments):
    with pytest.raises(HookReturnError) as info:
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_mid", hook)])
    message = str(info.value)
    for fragment in fragments + ["'blocks.0.hook_resid_mid'"]:
        assert fragment in message
    assert isinstance(info.value, InputError)


def test_a_hook_returning_none_or_the_same_shape_is_fine(model, tokens):
    clean = model(tokens)
    out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_mid", lambda t, hook: None),
                                                  ("blocks.1.hook_resid_mid", lambda t, hook: t.clone())])
    assert torch.equal(out, clean)


def test_add_hook_with_a_name_filter(model, tokens):
    counts = Counter()
    model.add_hook(lambda name: name.endswith("hook_pattern"), lambda t, hook: counts.update([hook.name]))
    model(tokens)
    model.reset_hooks()
    assert counts == Counter({"blocks.0.attn.hook_pattern": 1, "blocks.1.attn.hook_pattern": 1})


def test_gelu_gate_uses_exact_gelu():
    model = make_model(gate="gelu")
    _, cache = model.run_with_cache(random_tokens(model.cfg), names_filter=lambda n: "mlp.hook_p" in n)
    pre, lin = cache["blocks.0.mlp.hook_pre"], cache["blocks.0.mlp.hook_pre_linear"]
    assert torch.allclose(cache["blocks.0.mlp.hook_post"], F.gelu(pre) * lin, atol=1e-13)


# ------------------------------------------------------------------ the image model (HookedBilinearMLP)


@pytest.mark.parametrize("residual", [False, True])
def test_image_model_hooks_fire_once_and_satisfy_the_identities(residual):
    from hooked_bilinear import HookedBilinearMLP, HookedBilinearMLPConfig

    cfg = HookedBilinearMLPConfig(d_input=64, d_hidden=8, n_layers=2, residual=residual, bias=True, seed=0,
                                  dtype="float64")
    model = HookedBilinearMLP(cfg)
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.b_l.normal_()
            block.mlp.b_r.normal_()
    images = torch.rand(4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = Counter()
    model.run_with_hooks(images, fwd_hooks=[(lambda n: True, lambda t, hook: counts.update([hook.name]))])
    assert counts == Counter({name: 1 for name in model.hook_dict})
    logits, cache = model.run_with_cache(images)
    assert isinstance(cache, ActivationCache)
    h = images.reshape(4, 64) @ model.W_E
    assert torch.allclose(cache["hook_embed"], h, atol=1e-12)
    for layer, block in enumerate(model.blocks):
        c = lambda name: cache[f"blocks.{layer}.{name}"]  # noqa: E731
        assert torch.allclose(c("hook_resid_pre"), h, atol=1e-12)
        assert torch.allclose(c("mlp.hook_pre"), h @ block.mlp.W_l + block.mlp.b_l, atol=1e-12)
        assert torch.allclose(c("mlp.hook_pre_linear"), h @ block.mlp.W_r + block.mlp.b_r, atol=1e-12)
        assert torch.allclose(c("mlp.hook_post"), c("mlp.hook_pre") * c("mlp.hook_pre_linear"), atol=1e-12)
        h = c("mlp.hook_post") + (h if residual else 0)
        assert torch.allclose(c("hook_resid_post"), h, atol=1e-12)
    assert torch.allclose(logits, h @ model.W_U + model.b_U, atol=1e-12)
    assert torch.equal(cache["hook_logits"], logits)
    edited = model.run_with_hooks(images, fwd_hooks=[("blocks.0.mlp.hook_post", lambda t, hook: 2 * t)])
    assert not torch.allclose(edited, logits)
    with pytest.raises(HookReturnError):
        model.run_with_hooks(images, fwd_hooks=[("hook_embed", lambda t, hook: t[:1])])
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())
