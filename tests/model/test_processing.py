"""Weight processing: every step is an explicit opt-in and leaves the logits (or log-probs) unchanged."""

import copy

import pytest
import torch

from hooked_bilinear import ConfigError

from ._factories import NORMS, POSITIONS, make_model, random_tokens

TOL = dict(atol=1e-10, rtol=1e-10)
ARCHS = [dict(normalization_type=n, positional_embedding_type=p) for n in NORMS for p in POSITIONS] + [
    dict(attn_only=True), dict(gate="silu", mlp_bias=True), dict(attn_bias=False, unembed_bias=False),
    dict(normalization_type="RMS", mlp_bias=True, gate="relu"),
]
ARCH_IDS = ["-".join(f"{v}" for v in a.values()) for a in ARCHS]


def pair(**overrides):
    model = make_model(**overrides)
    return model, copy.deepcopy(model), random_tokens(model.cfg, batch=3)


def shift_free(logits):
    """Logits modulo a per-position constant (what center_unembed may change)."""
    return logits - logits.mean(-1, keepdim=True)


@pytest.mark.parametrize("overrides", ARCHS, ids=ARCH_IDS)
def test_fold_layer_norm_leaves_logits_unchanged(overrides):
    model, folded, tokens = pair(**overrides)
    folded.fold_layer_norm()
    assert torch.allclose(folded(tokens), model(tokens), **TOL)
    kind = model.cfg.normalization_type
    expected = {"LN": "LNPre", "RMS": "RMSPre"}.get(kind, kind)
    assert folded.cfg.normalization_type == expected
    if kind in ("LN", "RMS"):
        assert folded.cfg.layer_norm_folding
        assert not any(n.endswith((".w", ".b")) for n, _ in folded.named_parameters())
    assert set(folded.hook_dict) == set(model.hook_dict)  # same hook names before and after


def _zero_mlp_biases(model) -> None:
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.b_l.zero_()
            block.mlp.b_r.zero_()


def test_fold_layer_norm_puts_the_ln_bias_on_both_bilinear_branches():
    """b_l' = b_l + b_ln W_l and b_r' = b_r + b_ln W_r; W' = diag(w) W (spec §3)."""
    model, folded, _ = pair(normalization_type="LN", mlp_bias=False)
    _zero_mlp_biases(model)
    folded = copy.deepcopy(model).fold_layer_norm()
    for block, fblock in zip(model.blocks, folded.blocks):
        w, b = block.ln2.w, block.ln2.b
        assert torch.allclose(fblock.mlp.b_l, b @ block.mlp.W_l, **TOL)
        assert torch.allclose(fblock.mlp.b_r, b @ block.mlp.W_r, **TOL)
        assert torch.count_nonzero(fblock.mlp.b_l) > 0 and torch.count_nonzero(fblock.mlp.b_r) > 0
        assert torch.allclose(fblock.mlp.W_l, w[:, None] * block.mlp.W_l, **TOL)
        assert torch.allclose(fblock.attn.b_V, block.attn.b_V + torch.einsum("d,hde->he", block.ln1.b, block.attn.W_V), **TOL)
    assert folded.cfg.mlp_bias and folded.blocks[0].mlp.b_l.requires_grad  # the biases are now real


def test_fold_layer_norm_rms_has_no_bias_terms():
    model, folded, tokens = pair(normalization_type="RMS", mlp_bias=False)
    _zero_mlp_biases(model)
    folded = copy.deepcopy(model).fold_layer_norm()
    assert all(torch.count_nonzero(b.mlp.b_l) == 0 and torch.count_nonzero(b.mlp.b_r) == 0 for b in folded.blocks)
    assert not folded.cfg.mlp_bias
    assert torch.allclose(folded(tokens), model(tokens), **TOL)


def test_fold_layer_norm_is_idempotent():
    model, folded, tokens = pair()
    folded.fold_layer_norm()
    state = {k: v.clone() for k, v in folded.state_dict().items()}
    folded.fold_layer_norm()
    assert all(torch.equal(state[k], v) for k, v in folded.state_dict().items())


def test_folded_cache_matches_unfolded_residual_stream():
    """Folding changes hook_normalized (now pre-weight) but no residual-stream activation."""
    model, folded, tokens = pair(mlp_bias=True)
    folded.fold_layer_norm()
    _, a = model.run_with_cache(tokens)
    _, b = folded.run_with_cache(tokens)
    for name in a.keys():
        if "resid" in name or name.endswith(("_out", "hook_pattern", "hook_scale", "hook_post", "hook_pre")):
            assert torch.allclose(a[name], b[name], **TOL), name


@pytest.mark.parametrize("overrides", [dict(), dict(normalization_type="LNPre"), dict(positional_embedding_type="rotary"),
                                       dict(attn_only=True), dict(mlp_bias=True, gate="gelu")])
def test_center_writing_weights_leaves_logits_unchanged_under_layernorm(overrides):
    model, centred, tokens = pair(**overrides)
    centred.center_writing_weights()
    assert torch.allclose(centred(tokens), model(tokens), **TOL)
    mean_zero = [centred.W_E, centred.W_O, centred.b_O] + ([] if model.cfg.attn_only else [centred.W_out, centred.b_out])
    for t in mean_zero:
        assert torch.allclose(t.mean(-1), torch.zeros_like(t.mean(-1)), atol=1e-12)


@pytest.mark.parametrize("norm", ["RMS", "RMSPre", None])
def test_center_writing_weights_refused_without_layernorm(norm):
    model = make_model(normalization_type=norm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=f"normalization_type={norm!r}"):
        model.center_writing_weights()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("overrides", ARCHS, ids=ARCH_IDS)
def test_center_unembed_shifts_logits_by_a_per_position_constant(overrides):
    model, centred, tokens = pair(**overrides)
    centred.center_unembed()
    before, after = model(tokens), centred(tokens)
    shift = after - before
    assert torch.allclose(shift, shift[..., :1].expand_as(shift), **TOL)  # constant over the vocabulary
    assert torch.allclose(after.log_softmax(-1), before.log_softmax(-1), **TOL)
    assert torch.allclose(centred.W_U.mean(-1), torch.zeros(model.cfg.d_model, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(centred(tokens, return_type="loss"), model(tokens, return_type="loss"), **TOL)


@pytest.mark.parametrize("overrides", ARCHS, ids=ARCH_IDS)
def test_fold_value_biases_leaves_logits_unchanged(overrides):
    model, folded, tokens = pair(**overrides)
    folded.fold_value_biases()
    assert torch.allclose(folded(tokens), model(tokens), **TOL)
    assert torch.count_nonzero(folded.b_V) == 0
    expected = model.b_O + torch.einsum("lhe,lhed->ld", model.b_V, model.W_O)
    assert torch.allclose(folded.b_O, expected, **TOL)


@pytest.mark.parametrize("overrides", ARCHS, ids=ARCH_IDS)
def test_process_weights_leaves_log_probs_unchanged(overrides):
    model, processed, tokens = pair(**overrides)
    processed.process_weights()
    assert torch.allclose(shift_free(processed(tokens)), shift_free(model(tokens)), **TOL)
    if model.cfg.normalization_type in ("LN", "LNPre"):  # centering ran
        assert torch.allclose(processed.W_E.mean(-1), torch.zeros(model.cfg.d_vocab, dtype=torch.float64), atol=1e-12)
    else:  # skipped, not refused
        assert torch.equal(processed.W_E, model.W_E)


def test_process_weights_steps_can_be_turned_off():
    model, processed, tokens = pair()
    processed.process_weights(fold_ln=False, center_writing_weights=False, center_unembed=False,
                              fold_value_biases=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in processed.state_dict().items())
    processed.process_weights(fold_ln=False, center_writing_weights=False, center_unembed=True,
                              fold_value_biases=False)
    assert torch.equal(processed.W_E, model.W_E) and not torch.equal(processed.W_U, model.W_U)


def test_no_processing_by_default():
    model = make_model(randomize=False)
    assert model.cfg.normalization_type == "LN" and not model.cfg.layer_norm_folding
    assert hasattr(model.blocks[0].ln1, "w") and hasattr(model.ln_final, "b")
    assert not torch.allclose(model.W_U.mean(-1), torch.zeros(model.cfg.d_model, dtype=torch.float64), atol=1e-6)
    assert not torch.allclose(model.W_E.mean(-1), torch.zeros(model.cfg.d_vocab, dtype=torch.float64), atol=1e-6)


def test_processing_returns_the_model_for_chaining():
    model = make_model()
    assert model.fold_layer_norm() is model
    assert model.fold_value_biases().center_unembed().center_writing_weights() is model
