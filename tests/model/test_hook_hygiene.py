"""Hooks never outlive their scope, never corrupt weights, and caches never alias live tensors."""

import pytest
import torch

from hooked_bilinear import HookNameError, HookReturnError, InputError

from ._factories import assert_unchanged, hooked_points, make_model, random_tokens, snapshot


class Boom(RuntimeError):
    pass


def explode(tensor, hook):
    raise Boom(hook.name)


def test_run_with_hooks_cleans_up_when_a_hook_raises(model, tokens):
    with pytest.raises(Boom):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: None),
                                                ("blocks.1.mlp.hook_post", explode)])
    assert hooked_points(model) == []
    assert torch.allclose(model(tokens), model.run_with_hooks(tokens), atol=0)


def test_run_with_cache_cleans_up_when_a_hook_raises(model, tokens):
    with model.hooks(fwd_hooks=[("blocks.1.hook_attn_out", explode)]):
        with pytest.raises(Boom):
            model.run_with_cache(tokens)
    assert hooked_points(model) == []
    assert model.is_caching is False


def test_run_with_cache_cleans_up_when_the_input_is_bad(model):
    with pytest.raises(InputError):
        model.run_with_cache(torch.tensor([[1, 99]]), incl_bwd=False)
    assert hooked_points(model) == []


def test_hooks_context_cleans_up_when_the_body_raises(model, tokens):
    with pytest.raises(Boom):
        with model.hooks(fwd_hooks=[("hook_embed", lambda t, hook: None)],
                         bwd_hooks=[("hook_embed", lambda g, hook: None)]):
            assert sorted(hooked_points(model)) == ["hook_embed"]
            raise Boom("body")
    assert hooked_points(model) == []


def test_hook_return_error_leaves_no_hooks_and_no_changes(model, tokens):
    before = snapshot(model)
    with pytest.raises(HookReturnError):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda t, hook: t[0])])
    assert hooked_points(model) == []
    assert_unchanged(model, before)


def test_no_hook_is_added_when_any_name_is_unknown(model):
    with pytest.raises(HookNameError):
        with model.hooks(fwd_hooks=[("hook_embed", lambda t, hook: None), ("hook_embedd", lambda t, hook: None)]):
            pass
    assert hooked_points(model) == []


def test_nested_hook_contexts_unwind_in_order(model, tokens):
    fired = []

    def tag(label):
        return lambda t, hook: fired.append(label)

    with model.hooks(fwd_hooks=[("hook_embed", tag("outer"))]):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", tag("inner"))]):
            model(tokens)
            assert fired == ["outer", "inner"]
            assert sorted(hooked_points(model)) == ["blocks.0.hook_resid_post", "hook_embed"]
        fired.clear()
        model(tokens)
        assert fired == ["outer"]  # the inner hook left with its context, the outer one stayed
        assert hooked_points(model) == ["hook_embed"]
        with pytest.raises(Boom):
            with model.hooks(fwd_hooks=[("hook_embed", explode)]):
                model(tokens)
        assert hooked_points(model) == ["hook_embed"] and len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    assert hooked_points(model) == []
    assert model.context_level == 0


def test_run_with_hooks_inside_a_context_keeps_the_outer_hooks(model, tokens):
    fired = []
    with model.hooks(fwd_hooks=[("hook_embed", lambda t, hook: fired.append("outer"))]):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda t, hook: fired.append("run"))])
        assert hooked_points(model) == ["hook_embed"]
        _, cache = model.run_with_cache(tokens)
        assert hooked_points(model) == ["hook_embed"]
    assert fired == ["outer", "run", "outer"]
    assert hooked_points(model) == []


def test_permanent_hooks_survive_contexts_and_plain_resets(model, tokens):
    fired = []
    model.add_perma_hook("hook_embed", lambda t, hook: fired.append(1))
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: None)])
    model.reset_hooks()
    model(tokens)
    assert fired == [1, 1] and hooked_points(model) == ["hook_embed"]
    model.reset_hooks(including_permanent=True)
    assert hooked_points(model) == []


def test_reset_hooks_end_false_keeps_hooks_until_reset(model, tokens):
    model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda t, hook: None)], reset_hooks_end=False)
    assert hooked_points(model) == ["hook_embed"]
    model.reset_hooks()
    assert hooked_points(model) == []


def test_incl_bwd_leaves_no_backward_hooks(model, tokens):
    model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    assert hooked_points(model) == []
    model.zero_grad()


# ------------------------------------------------------------------ in-place edits and aliasing

CONFIGS_FOR_INPLACE = [dict(), dict(normalization_type=None, positional_embedding_type="none", mlp_bias=True),
                       dict(normalization_type="RMS", positional_embedding_type="rotary")]
INPLACE_CASES = [(c, name) for c in CONFIGS_FOR_INPLACE for name in sorted(make_model(**c).hook_dict)]


@pytest.mark.parametrize("overrides, name", INPLACE_CASES, ids=[f"{c}:{n}" for c, n in INPLACE_CASES])
def test_in_place_hook_edits_never_touch_the_weights(overrides, name):
    """Under no_grad a hook may edit its tensor in place; no hook point may hand out a view of a parameter."""
    model = make_model(**overrides)
    before = snapshot(model)
    tokens = random_tokens(model.cfg, batch=1)

    def scale_(tensor, hook):
        tensor.mul_(0.5)

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(name, scale_)])
    assert_unchanged(model, before)


def test_cache_does_not_alias_the_weights(model, tokens):
    _, cache = model.run_with_cache(tokens)
    kept = {k: v.clone() for k, v in cache.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for name, value in kept.items():
        assert torch.equal(cache[name], value), name


def test_caches_of_two_runs_are_independent(model, tokens):
    _, first = model.run_with_cache(tokens)
    kept = first["blocks.0.hook_resid_post"].clone()
    model.run_with_cache(tokens.flip(-1))
    assert torch.equal(first["blocks.0.hook_resid_post"], kept)


def test_forward_does_not_change_the_model(model, tokens):
    before = snapshot(model)
    model(tokens, return_type="both")
    model.run_with_cache(tokens)
    model.generate(tokens, max_new_tokens=2, do_sample=False)
    assert_unchanged(model, before)
    assert model.training  # generate restores the mode it found
