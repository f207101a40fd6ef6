"""Splicing dictionaries into the model: cache names, exact logits with the error term, clean detaching, bad input."""

import pytest
import torch

from hooked_bilinear import HookNameError, InputError
from hooked_bilinear.features import SAE, SAEConfig

HOOK = "blocks.1.hook_mlp_out"


def _sae(hook=HOOK, d_in=16, **kw):
    return SAE(SAEConfig(d_in=d_in, d_sae=40, k=4, hook_name=hook, **kw), seed=3)


def test_cache_names_and_exact_logits_with_error_term(tiny, tokens):
    clean = tiny(tokens)
    with torch.no_grad():
        x = tiny.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK]
    sae = _sae()
    tiny.add_sae(sae, use_error_term=True)
    try:
        logits = tiny(tokens)
        _, cache = tiny.run_with_cache(tokens)
    finally:
        tiny.reset_saes()
    assert torch.equal(logits, clean)  # bit for bit
    with torch.no_grad():
        torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], sae.encode(x))
        torch.testing.assert_close(cache[f"{HOOK}.hook_sae_error"], x - sae(x))
        torch.testing.assert_close(cache[f"{HOOK}.hook_sae_recons"], sae(x))
    assert not [n for n in tiny.hook_dict if "hook_sae" in n]
    assert sae.hook_sae_acts_post.name == "hook_sae_acts_post"  # its own short names are back


def test_without_error_term_the_reconstruction_flows_downstream(tiny, tokens):
    sae = _sae()
    with torch.no_grad():
        x = tiny.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK]
        recons = sae(x)
        with tiny.hooks([(HOOK, lambda acts, hook: recons)]):
            expected = tiny(tokens)
        with tiny.saes([sae]):
            got = tiny(tokens)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, tiny(tokens))


def test_editing_a_feature_changes_the_output_by_its_decoder_row(tiny, tokens):
    sae = _sae()
    f = 7

    def ablate(acts, hook):
        acts = acts.clone()
        acts[..., f] = 0
        return acts

    with torch.no_grad(), tiny.saes([sae], use_error_term=True):
        x = tiny.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK]
        a = sae.encode(x)
        with tiny.hooks([(f"{HOOK}.hook_sae_acts_post", ablate)]):
            _, cache = tiny.run_with_cache(tokens, names_filter=[HOOK])
    torch.testing.assert_close(cache[HOOK], x - a[..., f:f + 1] * sae.W_dec[f])


def test_transcoder_reads_one_hook_and_writes_another(tiny, tokens):
    inp = "blocks.1.ln2.hook_normalized"
    tc = _sae(hook=inp, hook_name_out=HOOK, apply_b_dec_to_input=False)
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tokens, names_filter=[inp])
        pred = tc(cache[inp])
        with tiny.hooks([(HOOK, lambda acts, hook: pred)]):
            expected = tiny(tokens)
        with tiny.saes([tc]):
            got, c2 = tiny.run_with_cache(tokens)
        with tiny.saes([tc], use_error_term=True):
            exact = tiny(tokens)
    torch.testing.assert_close(got, expected)
    assert torch.equal(exact, tiny(tokens))
    assert f"{inp}.hook_sae_acts_post" in c2.keys()


def test_bad_input_attaches_nothing(tiny, tokens):
    before = set(tiny.hook_dict)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(InputError, match=r"expects width 16 at 'blocks.1.mlp.hook_post', but that activation has "
                                         r"trailing shape \(32,\)"):
        tiny.add_sae(_sae(hook="blocks.1.mlp.hook_post"))
    with pytest.raises(HookNameError, match="blocks.1.hook_mlp_outt"):
        tiny.add_sae(_sae(hook="blocks.1.hook_mlp_outt"))
    with pytest.raises(InputError, match="needs a hooked_bilinear.features.SAE"):
        tiny.add_sae("not an sae")
    with pytest.raises(InputError, match="expects width"):  # the second is bad: the first is not attached either
        with tiny.saes([_sae(), _sae(hook="blocks.0.mlp.hook_post")]):
            pass
    tiny.add_sae(_sae())
    with pytest.raises(InputError, match="already has a dictionary attached"):
        tiny.add_sae(_sae())
    tiny.reset_saes()
    with pytest.raises(RuntimeError, match="boom"):
        with tiny.saes([_sae()]):
            raise RuntimeError("boom")
    assert set(tiny.hook_dict) == before and not tiny.acts_to_saes
    assert all(torch.equal(v, state[k]) for k, v in tiny.state_dict().items())
    assert all(not hp._forward_hooks for hp in tiny.hook_dict.values())
