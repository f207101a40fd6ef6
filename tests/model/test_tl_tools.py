"""TransformerLens 4.3's generic tools run on our model and give correct answers.

ActivationCache helpers (decompositions, apply_ln_to_stack, logit_attrs, logit_lens),
transformer_lens.patching, head_detector, SVDInterpreter and the tools.analysis entry points.
"""

import pytest
import torch

from hooked_bilinear._tl import ActivationCache

from ._factories import make_model, make_wordlevel_tokenizer, random_tokens

# resid decompositions must hold for every norm / position / MLP switch
DECOMP_CONFIGS = [
    dict(mlp_bias=True),
    dict(normalization_type="RMS", positional_embedding_type="rotary", mlp_bias=True),
    dict(normalization_type=None, positional_embedding_type="none"),
    dict(attn_only=True, normalization_type="LNPre"),
    dict(gate="silu", normalization_type="RMSPre", n_layers=3),
]
IDS = ["LN", "RMS-rotary", "none", "attn_only", "silu-3L"]
TOL = dict(atol=1e-10, rtol=1e-10)


def run(overrides, fold=False, batch=2, pos=6):
    model = make_model(**overrides)
    if fold:
        model.fold_layer_norm()
    tokens = random_tokens(model.cfg, batch=batch, pos=pos)
    logits, cache = model.run_with_cache(tokens)
    return model, tokens, logits, cache


def final_resid(model, cache):
    return cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]


@pytest.mark.parametrize("overrides", DECOMP_CONFIGS, ids=IDS)
def test_decompose_resid_sums_to_the_residual_stream(overrides):
    model, _, _, cache = run(overrides)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert torch.allclose(stack.sum(0), final_resid(model, cache), **TOL)
    assert labels[0] == "embed" and ("pos_embed" in labels) == (model.cfg.positional_embedding_type == "standard")
    # intermediate layers: input to block 1's attention, and to its MLP
    assert torch.allclose(cache.decompose_resid(layer=1).sum(0), cache["blocks.1.hook_resid_pre"], **TOL)
    assert torch.allclose(cache.decompose_resid(layer=1, mlp_input=True).sum(0), cache["blocks.1.hook_resid_mid"], **TOL)


@pytest.mark.parametrize("overrides", DECOMP_CONFIGS, ids=IDS)
@pytest.mark.parametrize("expand_neurons", [True, False])
def test_full_resid_decomposition_sums_to_the_residual_stream(overrides, expand_neurons):
    """Heads + neurons (exact for a bilinear MLP: hook_post * W_out) + embeddings + accumulated_bias."""
    model, _, _, cache = run(overrides)
    stack, labels = cache.get_full_resid_decomposition(expand_neurons=expand_neurons, return_labels=True)
    assert labels[-1] == "bias"
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    n_mlp = 0 if model.cfg.attn_only else model.cfg.n_layers * (model.cfg.d_mlp if expand_neurons else 1)
    assert stack.shape[0] == n_heads + n_mlp + 1 + (model.cfg.positional_embedding_type == "standard") + 1
    assert torch.allclose(stack.sum(0), final_resid(model, cache), **TOL)
    mid = cache.get_full_resid_decomposition(layer=1, mlp_input=True, expand_neurons=expand_neurons)
    assert torch.allclose(mid.sum(0), cache["blocks.1.hook_resid_mid"], **TOL)


def test_full_resid_decomposition_projected_onto_a_direction():
    model, _, logits, cache = run(dict(normalization_type="RMS", mlp_bias=True), fold=True)
    direction = model.W_U[:, 5]
    projected = cache.get_full_resid_decomposition(apply_ln=True, project_output_onto=direction)
    assert torch.allclose(projected.sum(0) + model.b_U[5], logits[..., 5], **TOL)


@pytest.mark.parametrize("overrides", DECOMP_CONFIGS, ids=IDS)
def test_accumulated_resid(overrides):
    model, _, logits, cache = run(overrides)
    stack, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels[-1] == "final_post" and labels[:3] == ["0_pre", "0_mid", "1_pre"]
    assert torch.equal(stack[0], cache["blocks.0.hook_resid_pre"])
    assert torch.equal(stack[1], cache["blocks.0.hook_resid_mid"])
    assert torch.equal(stack[-1], final_resid(model, cache))
    # apply_ln recomputes the final norm per entry: the last entry then gives the logits
    normed = cache.accumulated_resid(apply_ln=True)
    assert torch.allclose(model.unembed(normed[-1]), logits, **TOL)


def test_stack_head_results_and_compute_head_results():
    model, tokens, _, cache = run(dict(n_layers=3, n_heads=3, d_head=4))
    stack, labels = cache.stack_head_results(return_labels=True)
    assert labels[:4] == ["L0H0", "L0H1", "L0H2", "L1H0"] and stack.shape[0] == 9
    assert torch.equal(stack[4], cache["blocks.1.attn.hook_result"][:, :, 1])
    # without hook_result in the cache TL recomputes it from hook_z and W_O
    _, partial = model.run_with_cache(tokens, names_filter=lambda n: not n.endswith("hook_result"))
    assert torch.allclose(partial.stack_head_results(), stack, **TOL)
    with_rest = cache.stack_head_results(incl_remainder=True)
    assert torch.allclose(with_rest.sum(0), final_resid(model, cache), **TOL)


def test_stack_neuron_results_is_exact_for_the_bilinear_mlp():
    model, _, _, cache = run(dict(mlp_bias=True))
    neurons = cache.stack_neuron_results(layer=2)  # [2 * d_mlp, batch, pos, d_model]
    d_mlp = model.cfg.d_mlp
    for layer in range(2):
        total = neurons[layer * d_mlp:(layer + 1) * d_mlp].sum(0) + model.blocks[layer].mlp.b_out
        assert torch.allclose(total, cache[f"blocks.{layer}.hook_mlp_out"], **TOL)


@pytest.mark.parametrize("norm", ["LN", "LNPre", "RMS", "RMSPre", None])
def test_apply_ln_to_stack_reproduces_the_logits_after_folding(norm):
    """Cached-scale LN is linear: Σ_c apply_ln(c) @ W_U + b_U == logits exactly once ln_final is weightless."""
    model, tokens, logits, cache = run(dict(normalization_type=norm, mlp_bias=True), fold=True)
    stack = cache.get_full_resid_decomposition(expand_neurons=False)
    normed = cache.apply_ln_to_stack(stack)
    assert torch.allclose(normed.sum(0) @ model.W_U + model.b_U, logits, **TOL)
    # and per-position slices of the stack use the matching slice of the cached scale
    last = cache.apply_ln_to_stack(stack[:, :, -1], pos_slice=-1)  # an int slice drops the pos axis
    assert torch.allclose(last.sum(0) @ model.W_U + model.b_U, logits[:, -1], **TOL)


def test_apply_ln_to_stack_on_block_inputs():
    model, _, _, cache = run(dict(mlp_bias=True), fold=True)
    stack = cache.decompose_resid(layer=1, mlp_input=True)
    normed = cache.apply_ln_to_stack(stack, layer=1, mlp_input=True)
    assert torch.allclose(normed.sum(0), cache["blocks.1.ln2.hook_normalized"], **TOL)


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_logit_attrs_sum_to_the_logit(norm):
    model, tokens, logits, cache = run(dict(normalization_type=norm), fold=True)
    stack = cache.decompose_resid()  # logit_attrs applies the cached final-norm scale itself
    answer, wrong = torch.tensor(3), torch.tensor(7)
    attrs = cache.logit_attrs(stack, tokens=answer)
    assert torch.allclose(attrs, cache.apply_ln_to_stack(stack) @ model.W_U[:, 3], **TOL)
    assert torch.allclose(attrs.sum(0) + model.b_U[3], logits[..., 3], **TOL)
    diff = cache.logit_attrs(stack, tokens=answer, incorrect_tokens=wrong)
    expected = logits[..., 3] - logits[..., 7] - (model.b_U[3] - model.b_U[7])
    assert torch.allclose(diff.sum(0), expected, **TOL)


@pytest.mark.parametrize("overrides", DECOMP_CONFIGS, ids=IDS)
def test_logit_lens_final_entry_is_the_logits(overrides):
    model, _, logits, cache = run(overrides)
    model.eval()
    lens = cache.logit_lens(positions=None)
    assert lens.labels[-1] == "final_post"
    assert torch.allclose(lens.values[-1], logits, **TOL)


def test_direct_logit_attribution_after_folding():
    from transformer_lens.tools.analysis.direct_logit_attribution import direct_logit_attribution

    model, tokens, logits, _ = run(dict(mlp_bias=True), fold=True)
    model.eval()
    answer = torch.tensor([3, 4])
    dla = direct_logit_attribution(model, tokens, answer_tokens=answer)
    expected = logits[torch.arange(2), -1, answer] - model.b_U[answer]  # DLA reconstructs logit - b_U
    assert torch.allclose(dla.attribution.sum(0), expected, **TOL)


# ------------------------------------------------------------------ patching


def metric_factory(answer=3):
    return lambda logits: logits[:, -1, answer].mean()


PATCHERS = ["get_act_patch_resid_pre", "get_act_patch_resid_mid", "get_act_patch_attn_out", "get_act_patch_mlp_out",
            "get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_pattern_all_pos",
            "get_act_patch_attn_head_out_by_pos"]


@pytest.mark.parametrize("name", PATCHERS)
def test_patching_the_clean_run_into_itself_gives_the_clean_metric(name):
    import transformer_lens.patching as patching

    model = make_model(mlp_bias=True).eval()
    tokens = random_tokens(model.cfg, pos=5)
    metric = metric_factory()
    clean_logits, clean_cache = model.run_with_cache(tokens)
    assert isinstance(clean_cache, ActivationCache)
    result = getattr(patching, name)(model, tokens, clean_cache, metric)
    assert result.numel() > 0
    # TL stores patching results in float32 whatever the model dtype
    assert torch.allclose(result, metric(clean_logits).to(result.dtype).expand_as(result), atol=1e-5)


def test_patching_corrupted_run_matches_a_manual_patch():
    import transformer_lens.patching as patching

    model = make_model().eval()
    clean = random_tokens(model.cfg, batch=1, pos=5, seed=1)
    corrupt = random_tokens(model.cfg, batch=1, pos=5, seed=2)
    metric = metric_factory()
    _, clean_cache = model.run_with_cache(clean)
    result = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, 5)

    def patch(tensor, hook, pos=2):
        tensor = tensor.clone()
        tensor[:, pos] = clean_cache[hook.name][:, pos]
        return tensor

    manual = metric(model.run_with_hooks(corrupt, fwd_hooks=[("blocks.1.hook_resid_pre", patch)]))
    assert torch.allclose(result[1, 2], manual.to(result.dtype), atol=1e-5)
    assert not torch.allclose(metric(model(clean)), metric(model(corrupt)))  # the test is not vacuous


def test_patching_requires_eval_mode():
    import transformer_lens.patching as patching

    model = make_model()  # fresh models are in training mode, like any nn.Module
    tokens = random_tokens(model.cfg)
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(ValueError, match="evaluation mode"):
        patching.get_act_patch_resid_pre(model, tokens, cache, metric_factory())


# ------------------------------------------------------------------ head detector, SVD, attribution patching


@pytest.mark.parametrize("head", ["previous_token_head", "duplicate_token_head", "induction_head"])
def test_detect_head_matches_a_manual_score(head):
    from transformer_lens.head_detector import detect_head

    model = make_model(tokenizer=make_wordlevel_tokenizer()).eval()
    text = "the cat sat on the cat sat"
    scores = detect_head(model, text, head)
    assert scores.shape == (model.cfg.n_layers, model.cfg.n_heads)
    tokens = model.to_tokens(text)[0]
    n = len(tokens)
    same = (tokens[:, None] == tokens[None, :]).float().tril(-1)
    detection = {
        "previous_token_head": torch.diag(torch.ones(n - 1), -1),
        "duplicate_token_head": same,
        "induction_head": torch.cat([torch.zeros(n, 1), same[:, :-1]], dim=1).tril(),
    }[head]
    _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer][0]
        manual = (pattern * detection).sum((-1, -2)) / pattern.sum((-1, -2))
        assert torch.allclose(scores[layer], manual.to(scores.dtype), atol=1e-6)


def test_svd_interpreter_on_ov_and_w_out():
    from transformer_lens import SVDInterpreter

    model = make_model()
    svd = SVDInterpreter(model)
    ov = svd.get_singular_vectors("OV", layer_index=1, num_vectors=3, head_index=0)
    assert ov.shape == (model.cfg.d_vocab, 1, 3)
    w_out = svd.get_singular_vectors("w_out", layer_index=0, num_vectors=3)
    assert w_out.shape == (model.cfg.d_vocab, 1, 3)



@pytest.mark.parametrize("fold", [False, True])
def test_svd_interpreter_w_in_reads_both_bilinear_branches(fold):
    """`w_in` of a bilinear MLP is [W_l | W_r] (both read the residual); TL's result against a direct SVD,
    with ln2's weight applied (unfolded) or folded in."""
    from transformer_lens import SVDInterpreter

    model = make_model(normalization_type="RMS")
    with torch.no_grad():
        model.blocks[1].ln2.w.uniform_(0.5, 2.0)
    if fold:
        model.fold_layer_norm()
    got = SVDInterpreter(model).get_singular_vectors("w_in", layer_index=1, num_vectors=3)[:, 0, :]
    mlp = model.blocks[1].mlp
    W = torch.cat([mlp.W_l, mlp.W_r], dim=1).detach().double()  # [d_model, 2 d_mlp]
    if not fold:
        W = model.blocks[1].ln2.w.detach().double()[:, None] * W
    _, _, Vh = torch.linalg.svd(W.T)
    want = model.W_U.detach().double().T @ Vh[:3].T  # [d_vocab, 3]
    torch.testing.assert_close(got.abs().double(), want.abs(), atol=1e-5, rtol=1e-4)  # up to SVD signs


def test_attribution_patching_runs_and_is_zero_for_identical_inputs():
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch

    model = make_model().eval()
    clean = random_tokens(model.cfg, batch=1, pos=5, seed=1)
    result = attribution_patch(model, clean, clean, lambda logits: logits[0, -1, 3])
    assert len(result.node_scores) > 0
    assert all(abs(v) < 1e-12 for v in result.node_scores.values())
    corrupt = random_tokens(model.cfg, batch=1, pos=5, seed=2)
    moved = attribution_patch(model, clean, corrupt, lambda logits: logits[0, -1, 3])
    assert any(abs(v) > 1e-6 for v in moved.node_scores.values())
