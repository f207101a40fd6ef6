"""Issue 17, "TL's tools on our model": each point run through TransformerLens 4.3's own function where one exists.

Expected numbers come from an independent computation: a manual intervention with ordinary hooks, the
true logits, or plain autograd.
"""

import inspect

import pytest
import torch
from transformer_lens import patching

from hooked_bilinear import ConfigError, HookNameError, InputError

from ._factories import make_model, random_tokens

TOL = dict(atol=1e-10, rtol=1e-10)


def logit_diff(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


# --------------------------------------------------------------------------- folding keeps mode and hooks
@pytest.mark.parametrize("via", ["fold_layer_norm", "process_weights"])
def test_folding_keeps_eval_mode_so_tl_patching_accepts_the_model(via):
    model = make_model().eval()
    getattr(model, via)()
    assert not any(m.training for m in model.modules())
    clean, corrupt = random_tokens(model.cfg, batch=1, pos=5, seed=1), random_tokens(model.cfg, batch=1, pos=5, seed=2)
    _, clean_cache = model.run_with_cache(clean)
    out = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, lambda lg: logit_diff(lg).sum())
    assert out.shape == (2, 5)
    train_model = make_model().train().fold_layer_norm()
    assert all(m.training for m in train_model.modules())  # a training model stays in training mode


def test_folding_keeps_every_hook_on_the_norm_hook_points():
    model = make_model()
    seen = []
    names = ["blocks.0.ln1.hook_scale", "blocks.1.ln2.hook_normalized", "ln_final.hook_scale"]
    model.add_hook(names[0], lambda x, hook: seen.append(hook.name), is_permanent=True)
    model.add_hook(names[1], lambda x, hook: seen.append(hook.name))
    model.add_hook(names[2], lambda x, hook: seen.append(hook.name))
    model.fold_layer_norm()
    model(random_tokens(model.cfg))
    assert sorted(seen) == sorted(names)
    assert set(model.list_hooks()) == set(names)
    model.reset_hooks()  # temporary ones go, the permanent one stays, as before folding
    assert list(model.list_hooks()) == [names[0]]


# --------------------------------------------------------------------------- split qkv input, attn result
def test_split_qkv_input_mode_keeps_the_logits_and_adds_the_hook_points():
    model = make_model(normalization_type="LN", positional_embedding_type="rotary")
    tokens = random_tokens(model.cfg)
    before = model(tokens)
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(tokens)
    assert cache["blocks.1.attn.hook_q_input"].shape == (*tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    torch.testing.assert_close(cache["blocks.1.attn.hook_k_input"][:, :, 1], cache["blocks.1.hook_resid_pre"])
    torch.testing.assert_close(model(tokens), before, **TOL)
    model.set_use_split_qkv_input(False)
    assert "blocks.0.attn.hook_v_input" not in model.hook_dict


def manual_direct_path(model, corrupt, delta, dst_layer, dst_head, component):
    """The edge patch by hand, with no split mode: recompute one head's q/k/v from (corrupted resid_pre + delta)."""
    attn, ln1 = model.blocks[dst_layer].attn, model.blocks[dst_layer].ln1
    store = {}
    W, b = {"q": (attn.W_Q, attn.b_Q), "k": (attn.W_K, attn.b_K), "v": (attn.W_V, attn.b_V)}[component]

    def keep(x, hook):
        store["resid"] = x.clone()

    def replace(x, hook):
        x = x.clone()
        x[:, :, dst_head] = ln1(store["resid"] + delta) @ W[dst_head] + b[dst_head]
        return x

    return model.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{dst_layer}.hook_resid_pre", keep),
                                                    (f"blocks.{dst_layer}.attn.hook_{component}", replace)])


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_tl_direct_path_patching_gives_the_manual_edge_patch(component):
    model = make_model(n_layers=3, normalization_type="LN").eval()
    clean, corrupt = random_tokens(model.cfg, batch=2, pos=6, seed=1), random_tokens(model.cfg, batch=2, pos=6, seed=2)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    metric = lambda lg: logit_diff(lg).mean()  # noqa: E731
    got = patching.get_act_patch_direct_path(model, corrupt, clean_cache, corrupt_cache, metric, src_layer=0,
                                             src_head=1, component=component, verbose=False)
    W_O = model.blocks[0].attn.W_O[1]
    delta = (clean_cache["blocks.0.attn.hook_z"][:, :, 1] - corrupt_cache["blocks.0.attn.hook_z"][:, :, 1]) @ W_O
    for dst_layer in (1, 2):
        for dst_head in range(model.cfg.n_heads):
            want = metric(manual_direct_path(model, corrupt, delta, dst_layer, dst_head, component))
            torch.testing.assert_close(got[dst_layer, dst_head].double(), want.double(), atol=1e-5, rtol=1e-5)
    assert not model.cfg.use_split_qkv_input and "blocks.1.attn.hook_q_input" not in model.hook_dict
    every = patching.get_act_patch_direct_path_all_sources(model, corrupt, clean_cache, corrupt_cache, metric,
                                                           component=component, verbose=False)
    torch.testing.assert_close(every[0, 1], got)


def test_set_use_attn_result_switches_hook_result():
    model = make_model()
    tokens = random_tokens(model.cfg)
    assert "blocks.0.attn.hook_result" in model.run_with_cache(tokens)[1]
    model.set_use_attn_result(False)
    logits, cache = model.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" not in cache and "blocks.0.attn.hook_z" in cache
    torch.testing.assert_close(logits, model(tokens), **TOL)
    model.set_use_attn_result(True)
    assert "blocks.1.attn.hook_result" in model.run_with_cache(tokens)[1]


# --------------------------------------------------------------------------- introspection
def test_list_hooks_and_lens_handle_show_the_users_callable():
    model = make_model()

    def my_hook(x, hook):
        return None

    model.add_hook("blocks.0.hook_resid_pre", my_hook)
    (handle,) = model.list_hooks()["blocks.0.hook_resid_pre"]
    assert handle.user_hook is my_hook
    assert model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks[0].user_hook is my_hook


# --------------------------------------------------------------------------- DLA on an unfolded model
@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_tl_logit_attrs_on_an_unfolded_model_sum_to_the_logit_difference(norm):
    """TL's logit_attrs reads tokens_to_residual_directions: with ln_final's weight in it, the attributions
    sum to the true logit difference, less the constant the norm's bias and b_U add (TL leaves those out)."""
    model = make_model(normalization_type=norm)
    tokens = random_tokens(model.cfg)
    logits, cache = model.run_with_cache(tokens)
    stack = cache.decompose_resid()
    attrs = cache.logit_attrs(stack, tokens=torch.tensor(3), incorrect_tokens=torch.tensor(5))
    const = model.b_U[3] - model.b_U[5]
    if norm == "LN":
        const = const + model.ln_final.b @ (model.W_U[:, 3] - model.W_U[:, 5])
    true = logits[..., 3] - logits[..., 5]
    torch.testing.assert_close(attrs.sum(0) + const, true, atol=1e-9, rtol=1e-9)
    # the same attributions as TL gives on the folded copy, component by component
    folded = make_model(normalization_type=norm).fold_layer_norm()
    _, fcache = folded.run_with_cache(tokens)
    fattrs = fcache.logit_attrs(fcache.decompose_resid(), tokens=torch.tensor(3), incorrect_tokens=torch.tensor(5))
    torch.testing.assert_close(attrs, fattrs, atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------- SVD, refactor, incl_bwd
def test_refactor_factored_attn_matrices_runs_tls_refactor_and_keeps_the_logits():
    model = make_model(normalization_type="LN")
    tokens = random_tokens(model.cfg)
    before, qk, ov = model(tokens), model.QK.AB.clone(), model.OV.AB.clone()
    model.refactor_factored_attn_matrices()
    torch.testing.assert_close(model(tokens), before, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(model.OV.AB, ov, atol=1e-9, rtol=1e-9)
    W_O = model.W_O[0, 0]  # [d_head, d_model]: orthonormal rows after the refactor
    torch.testing.assert_close(W_O @ W_O.T, torch.eye(model.cfg.d_head, dtype=W_O.dtype), atol=1e-9, rtol=0)
    assert not torch.allclose(model.QK.AB, torch.zeros_like(qk))
    rotary = make_model(positional_embedding_type="rotary")
    with pytest.raises(ConfigError, match="rotary"):
        rotary.refactor_factored_attn_matrices()


def _grads_by_autograd(model, tokens, name):
    store = {}

    def keep(x, hook):
        x.retain_grad()
        store["x"] = x

    with torch.enable_grad():
        loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(name, keep)])
        loss.backward()
    model.zero_grad()
    return store["x"].grad


@pytest.mark.parametrize("case", ["no_grad", "frozen"])
def test_incl_bwd_works_under_no_grad_and_with_frozen_parameters(case):
    model = make_model()
    tokens = random_tokens(model.cfg)
    name = "blocks.1.hook_resid_mid"
    want = _grads_by_autograd(model, tokens, name)
    if case == "frozen":
        model.requires_grad_(False)
        _, cache = model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    else:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    torch.testing.assert_close(cache[f"{name}_grad"], want, **TOL)
    assert not model.list_hooks()


def test_incl_bwd_refuses_stop_at_layer_and_inference_mode_clearly():
    model = make_model()
    tokens = random_tokens(model.cfg)
    with pytest.raises(InputError, match="stop_at_layer returns the residual stream"):
        model.run_with_cache(tokens, incl_bwd=True, stop_at_layer=1, return_type="loss")
    with torch.inference_mode(), pytest.raises(InputError, match="inference_mode"):
        model.run_with_cache(tokens, incl_bwd=True, return_type="loss")
    assert not model.list_hooks()


# --------------------------------------------------------------------------- config after construction
@pytest.mark.parametrize("field, value, words", [
    ("n_key_value_heads", 1, ["n_key_value_heads", "n_key_value_heads=2", "not 1"]),
    ("d_model", 32, ["d_model", "16"]),
    ("normalization_type", "RMS", ["fold_layer_norm"]),
    ("use_split_qkv_input", True, ["set_use_split_qkv_input"]),
    ("attn_scale", -1.0, ["attn_scale", "-1.0"]),
])
def test_a_config_change_on_a_built_model_is_refused_and_changes_nothing(field, value, words):
    model = make_model()
    before = getattr(model.cfg, field)
    with pytest.raises(ConfigError) as err:
        setattr(model.cfg, field, value)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert getattr(model.cfg, field) == before


def test_allowed_config_changes_still_work():
    model = make_model()
    model.cfg.default_prepend_bos = True
    model.cfg.attn_scale = 2.0  # read by the forward: a consistent change
    assert model.cfg.default_prepend_bos and model.cfg.attn_scale == 2.0
    assert model.cfg.d_vocab_out == model.cfg.d_vocab == model(random_tokens(model.cfg)).shape[-1]


# --------------------------------------------------------------------------- cache keys, signatures
def test_a_wrong_cache_key_suggests_the_closest_names():
    model = make_model()
    _, cache = model.run_with_cache(random_tokens(model.cfg), names_filter=lambda n: "resid" in n)
    with pytest.raises(HookNameError, match=r"did you mean \['blocks.0.hook_resid_pre'"):
        cache["blocks.0.hook_resid_pr"]
    with pytest.raises(KeyError, match="names_filter left it out"):
        cache["blocks.0.attn.hook_pattern"]
    with pytest.raises(HookNameError, match="not cached"):
        cache["pattern", 0]
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])  # TL's short names still work


def test_delegated_methods_carry_the_real_signature_and_docstring():
    from hooked_bilinear.circuits import decompose

    model = make_model()
    sig = inspect.signature(model.decompose)
    assert list(sig.parameters)[:3] == ["tokens", "level", "target"]
    assert model.decompose.__doc__ == decompose.__doc__
    assert "level" in inspect.signature(type(model).decompose).parameters


def test_folding_a_scale_norm_refuses_to_drop_hooked_norm_points():
    """A Scale norm folds away entirely (its hook points go): with hooks on them it refuses and changes nothing."""
    model = make_model(normalization_type="Scale")
    model.add_hook("blocks.0.ln1.hook_normalized", lambda x, hook: None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"blocks\.0\.ln1\.hook_normalized"):
        model.fold_layer_norm()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.cfg.normalization_type == "Scale"
