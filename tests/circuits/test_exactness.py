"""Σ path terms == the real forward pass (spec §2.3 theorem, §5 items 9 and 11), across architectures.

Tolerances (brief): rel error ≤ 1e-10 in float64 and ≤ 1e-5 in float32.
"""

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose

from ._models import folded_copy, make_model, tokens

NORMS = ["LN", "RMS", None, "LNPre", "RMSPre"]
POSITIONS = ["standard", "rotary", "none"]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def check_all_levels(model, toks, tol, layers_full=2):
    """Level 1 and 2 (full output and a target), lazy, and full enumeration when small."""
    results = []
    for level in (1, 2):
        results.append(decompose(model, toks, level=level))
        results.append(decompose(model, toks, level=level, target=Target.logit_diff(1, 2, pos=3)))
    results.append(decompose(model, toks, level="lazy", budget=25))
    if model.cfg.n_layers <= layers_full:
        results.append(decompose(model, toks, level="full", target=Target.logit(4)))
    for d in results:
        c = d.check()
        assert c.max_rel_err <= tol, f"level={d.level}: {c}"
    return results


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_exact_float64_all_norms_and_positions(norm, pos):
    for n_layers in (1, 2, 3):
        model = make_model(n_layers, norm, pos)
        check_all_levels(model, tokens(), TOL[torch.float64], layers_full=1 if pos != "none" else 2)


@pytest.mark.parametrize("pos", ["standard", "rotary"])
@pytest.mark.parametrize("norm", ["LN", "RMS", None])
@pytest.mark.parametrize("biases", [True, False])
def test_exact_float32(norm, biases, pos):
    for n_layers in (1, 2, 3):
        model = make_model(n_layers, norm, pos, biases=biases, dtype=torch.float32)
        check_all_levels(model, tokens(), TOL[torch.float32], layers_full=1)


@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_exact_without_biases_float64(norm):
    for n_layers in (1, 2, 3):
        check_all_levels(make_model(n_layers, norm, biases=False), tokens(), TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_exact_on_folded_weights(norm, dtype):
    """TL-style processed weights (LN folded, writing weights centred, value biases folded) stay exact."""
    for n_layers in (1, 3):
        model = folded_copy(make_model(n_layers, norm, dtype=dtype))
        assert model.cfg.normalization_type in ("LNPre", "RMSPre")
        check_all_levels(model, tokens(), TOL[dtype], layers_full=1)


def test_folded_and_unfolded_models_give_the_same_terms():
    """Folding is exact, so the extractor's (on-the-fly folded) terms agree term by term."""
    model = make_model(2, "LN")
    folded = copy_fold = folded_copy(model)
    toks = tokens()
    a = decompose(model, toks, level=2, target=5)
    b = decompose(copy_fold, toks, level=2, target=5)
    assert [n.label for n in a.nodes] == [n.label for n in b.nodes]
    # centring the writing weights moves nothing into or out of any term under LayerNorm
    torch.testing.assert_close(a.values, b.values, rtol=1e-9, atol=1e-10)
    assert folded.cfg.normalization_type == "LNPre"


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_attention_only_models(n_layers):
    model = make_model(n_layers, "LN", attn_only=True)
    results = check_all_levels(model, tokens(), TOL[torch.float64], layers_full=3)
    assert all(n.kind not in ("mlp_c", "sq", "pair") for d in results for n in d.nodes)


@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_residual_points(norm):
    """Decomposing resid_pre of every layer (and the final residual) reproduces the cached stream."""
    model = make_model(3, norm)
    toks = tokens()
    for layer in range(4):
        for level in (1, 2):
            d = decompose(model, toks, level=level, at=layer)
            assert d.check().max_rel_err <= 1e-10
            torch.testing.assert_close(d.reference, model.run_with_cache(toks)[1][
                f"blocks.{layer}.hook_resid_pre" if layer < 3 else "blocks.2.hook_resid_post"])
        u = torch.randn(model.cfg.d_model, dtype=torch.float64)
        d = decompose(model, toks, level="lazy", at=layer, target=Target.direction(u, pos=-2), budget=10)
        assert d.check().max_rel_err <= 1e-10
    hook = decompose(model, toks, level=1, at="blocks.1.hook_resid_pre")
    assert torch.equal(hook.reference, decompose(model, toks, level=1, at=1).reference)


def test_targets_match_real_logits():
    model = make_model(2, "LN")
    toks = tokens(batch=3)
    logits = model(toks)
    cases = {
        Target.logit(3, pos=2): logits[:, 2, 3],
        Target.logit(torch.tensor([1, 2, 3]), pos=-1): logits[:, -1, [1, 2, 3]].diagonal(),
        Target.logit_diff(4, 5, pos=[1, -1]): (logits[:, [1, -1], 4] - logits[:, [1, -1], 5]).sum(1),
        Target.next_token(): logits[:, :-1].gather(-1, toks[:, 1:, None]).sum((1, 2)),
    }
    for target, want in cases.items():
        d = decompose(model, toks, level=2, target=target)
        torch.testing.assert_close(d.reference, want)
        torch.testing.assert_close(d.total, want, rtol=1e-10, atol=1e-12)


def test_model_is_not_modified_and_model_method_matches():
    model = make_model(2, "LN")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg_before = model.cfg.to_dict()
    toks = tokens()
    d1 = decompose(model, toks, level=2, target=3)
    d2 = model.decompose(toks, level=2, target=3)
    assert model.cfg.to_dict() == cfg_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.ln_final.__class__.__name__ == "LayerNorm"
    torch.testing.assert_close(d1.values, d2.values)


def test_float64_compute_of_a_float32_model():
    """dtype=float64 computes the expansion in double; the error is then the float32 forward's own."""
    model = make_model(3, "LN", dtype=torch.float32)
    d = decompose(model, tokens(), level=2, target=2, dtype=torch.float64)
    assert d.values.dtype == torch.float64
    assert d.check().max_rel_err <= 1e-5
