"""Weight-only token-space circuits against materialized tensors (V = 11 ≤ 20), spec §2.2 and §4."""

import pytest
import torch

from hooked_bilinear._tl import FactoredMatrix
from hooked_bilinear.circuits import (
    TokenPairTensor,
    direct_circuit,
    mlp_token_tensor,
    ov_circuit,
    qk_circuit,
)
from hooked_bilinear.circuits.frozen import fold_weights, freeze
from hooked_bilinear.errors import NotBilinearError
from hooked_bilinear.tensor import MaterializeTooLargeError, TokenBilinear

from ._models import make_model, tokens


@pytest.mark.parametrize("norm", ["LN", "RMS", None])
def test_token_space_tensors_reproduce_the_logits(norm):
    """Spec §2.2 token-space form: direct + OV + ee diagonal + eh + hh (face-splitting) == logits."""
    model = make_model(1, norm, "none", biases=False)
    toks = tokens(batch=1)
    run = freeze(model, toks)
    t = toks[0]
    A = run.patterns[0][0]
    s1, s2, sf = run.scale1[0][0, :, 0], run.scale2[0][0, :, 0], run.scale_final[0, :, 0]
    At = A / s1[None, None, :]  # effective pattern: source-side scale folded in
    logits = direct_circuit(model).AB[t] / sf[:, None]
    logits = logits + torch.einsum("hps,hsc->pc", At, ov_circuit(model, 0).AB[:, t]) / sf[:, None]
    ee = mlp_token_tensor(model, 0)
    mlp = ee.bigram_diagonal()[t]  # only the diagonal of the ee tensor is used
    for h in range(2):
        eh = mlp_token_tensor(model, 0, "embed", (0, h)).materialize()  # [c, current, source]
        mlp = mlp + torch.einsum("ps,cps->pc", At[h], eh[:, t][:, :, t])
        hh = mlp_token_tensor(model, 0, (0, h)).materialize()
        mlp = mlp + torch.einsum("ps,pt,cst->pc", At[h], At[h], hh[:, t][:, :, t])
    hh01 = mlp_token_tensor(model, 0, (0, 0), (0, 1)).materialize()
    mlp = mlp + torch.einsum("ps,pt,cst->pc", At[0], At[1], hh01[:, t][:, :, t])
    logits = logits + mlp / (sf * s2**2)[:, None] + run.folded.b_U
    torch.testing.assert_close(logits, model(toks)[0], rtol=1e-10, atol=1e-10)


def test_same_source_tensor_queries_match_materialized():
    model = make_model(1, "LN", biases=False)
    f = fold_weights(model)
    W_l, W_r = f.layers[0].W_l, f.layers[0].W_r
    B = torch.einsum("ko,ik,jk->oij", f.layers[0].W_out, W_l, W_r)
    ee = mlp_token_tensor(model, 0)
    assert isinstance(ee, TokenBilinear)
    T = ee.materialize()
    want = torch.einsum("oc,oij,ai,bj->cab", f.W_U, B, f.W_E, f.W_E)
    torch.testing.assert_close(T, 0.5 * (want + want.transpose(1, 2)))
    torch.testing.assert_close(ee.pair_logits(2, 7), T[:, 2, 7])
    torch.testing.assert_close(ee.row(4, 2), T[4, 2])
    torch.testing.assert_close(ee.interaction(4), T[4])
    torch.testing.assert_close(ee.bigram_diagonal(), T.diagonal(dim1=1, dim2=2).T)
    eg = ee.eig(4)
    torch.testing.assert_close(eg.matrix(), T[4])  # Q_c(token) = Σ λ_i (W_E v_i)(W_E v_i)ᵀ, exact
    vals, a, b = ee.top_pairs(4, k=1)
    upper = torch.triu(T[4])
    upper[torch.tril(torch.ones_like(upper, dtype=torch.bool), -1)] = -torch.inf
    assert vals[0] == upper.max() and T[4, a[0], b[0]] == upper.max()


def test_cross_source_tensor_queries_match_materialized():
    model = make_model(1, "RMS", biases=False)
    f = fold_weights(model)
    L = f.layers[0]
    W_l, W_r = L.W_l, L.W_r
    B = torch.einsum("ko,ik,jk->oij", L.W_out, W_l, W_r)
    E_head = f.W_E @ L.W_V[1] @ L.W_O[1]
    eh = mlp_token_tensor(model, 0, "embed", (0, 1))
    assert isinstance(eh, TokenPairTensor) and eh.shape == (11, 11, 11)
    T = eh.materialize()
    ordered = torch.einsum("oc,oij,ai,bj->cab", f.W_U, B, f.W_E, E_head)
    swapped = torch.einsum("oc,oij,bi,aj->cab", f.W_U, B, E_head, f.W_E)
    torch.testing.assert_close(T, ordered + swapped)  # 2·B_sym: the unordered pair term
    assert (T - T.transpose(1, 2)).abs().max() > 1e-3  # rows and columns are different sources
    torch.testing.assert_close(eh.pair_logits(3, 9), T[:, 3, 9])
    torch.testing.assert_close(eh.row(5, 3), T[5, 3])
    torch.testing.assert_close(eh.interaction(5, chunk_size=4), T[5])
    vals, a, b = eh.top_pairs(5, k=3, chunk_size=4, largest=False)
    torch.testing.assert_close(vals, T[5].flatten().topk(3, largest=False).values)
    torch.testing.assert_close(T[5, a, b], vals)


def test_materialize_guard_refuses_large_tensors():
    model = make_model(1, "LN")
    with pytest.raises(MaterializeTooLargeError, match="max_bytes"):
        mlp_token_tensor(model, 0).materialize(max_bytes=1000)
    with pytest.raises(MaterializeTooLargeError, match="factored"):
        mlp_token_tensor(model, 0, "embed", (0, 0)).materialize(max_bytes=1000)


def test_ov_and_direct_circuits_are_factored_and_exact():
    model = make_model(2, "LN")
    f = fold_weights(model)
    ov = ov_circuit(model, 1, head=0)
    assert isinstance(ov, FactoredMatrix) and ov.AB.shape == (11, 11)
    L = f.layers[1]
    torch.testing.assert_close(ov.AB, f.W_E @ L.W_V[0] @ L.W_O[0] @ f.W_U)
    assert ov_circuit(model, 1).AB.shape == (2, 11, 11)
    direct = direct_circuit(model)
    C = torch.eye(8, dtype=torch.float64) - 1 / 8
    torch.testing.assert_close(direct.AB, model.W_E @ C @ (model.ln_final.w[:, None] * model.W_U))


def test_qk_circuit_reproduces_rotary_attention_scores():
    """Bias-free rotary model: score[p, s] = QK_{p−s}[t_p, t_s] / (σ1_p σ1_s attn_scale), R_δ exact."""
    model = make_model(1, "LN", "rotary", biases=False)
    toks = tokens(batch=1)
    _, cache = model.run_with_cache(toks)
    scores = cache["blocks.0.attn.hook_attn_scores"][0]
    s1 = cache["blocks.0.ln1.hook_scale"][0, :, 0]
    t = toks[0]
    for p, s in [(5, 1), (4, 4), (3, 0)]:
        qk = qk_circuit(model, 0, offset=p - s).AB
        torch.testing.assert_close(scores[:, p, s], qk[:, t[p], t[s]] / (s1[p] * s1[s] * model.cfg.attn_scale))
    assert (qk_circuit(model, 0, offset=3).AB - qk_circuit(model, 0, offset=0).AB).abs().max() > 1e-3
    plain = make_model(1, "LN", "standard", biases=False)
    torch.testing.assert_close(qk_circuit(plain, 0, offset=3).AB, qk_circuit(plain, 0).AB)


def test_weight_circuits_refuse_non_bilinear_models():
    with pytest.raises(NotBilinearError, match="attention-only"):
        mlp_token_tensor(make_model(1, "LN", attn_only=True), 0)
    with pytest.raises(NotBilinearError, match="gate"):
        mlp_token_tensor(make_model(1, "LN", gate="silu"), 0)


def test_fold_weights_copies_only_what_a_norm_folds_into():
    """A weightless RMS model folds without copying its matrices (no norm weight, no centering, same dtype);
    a weighted norm or a dtype change makes fresh tensors, and the model's weights are never written."""
    plain = make_model(1, "RMSPre", "none", biases=False)
    f = fold_weights(plain)
    L, mlp = f.layers[0], plain.blocks[0].mlp
    assert L.W_l.data_ptr() == mlp.W_l.data_ptr() and L.W_r.data_ptr() == mlp.W_r.data_ptr()
    assert f.W_U.data_ptr() == plain.W_U.data_ptr()
    weighted = make_model(1, "RMS", "none", biases=False)
    before = weighted.blocks[0].mlp.W_l.detach().clone()
    g = fold_weights(weighted)
    w2 = weighted.blocks[0].ln2.w.detach()
    assert g.layers[0].W_l.data_ptr() != weighted.blocks[0].mlp.W_l.data_ptr()
    torch.testing.assert_close(g.layers[0].W_l, before * w2[:, None], rtol=0, atol=0)
    torch.testing.assert_close(weighted.blocks[0].mlp.W_l.detach(), before, rtol=0, atol=0)
    assert fold_weights(plain, torch.float32).layers[0].W_l.data_ptr() != mlp.W_l.data_ptr()
