"""Weight-only token-space queries against the materialized V³ tensor (math.md §4, §5 item 12)."""

import pytest
import torch

from hooked_bilinear.tensor import BilinearTensor, MaterializeTooLargeError, TokenBilinear

from ._helpers import assert_close, make_weights

V, D, M = 13, 6, 9


def setup(dtype=torch.float64, seed=3, V_out=None):
    g = torch.Generator().manual_seed(seed)
    w = make_weights(D, M, D, dtype, seed, bias=False)
    W_E = torch.randn(V, D, generator=g, dtype=dtype)
    W_U = torch.randn(D, V_out or V, generator=g, dtype=dtype)
    tb = TokenBilinear.from_weights(W_E, w.W_l, w.W_r, w.W_out, W_U)
    # reference: T[c,a,b] = Σ_o W_U[o,c] B[o,i,j] W_E[a,i] W_E[b,j]
    B = BilinearTensor(w.W_l, w.W_r, w.W_out).materialize()
    T = torch.einsum("oc,oij,ai,bj->cab", W_U, B, W_E, W_E)
    return tb, T, 0.5 * (T + T.transpose(1, 2)), W_E, W_U, w


def test_materialize_equals_unembedded_B(dtype):
    tb, T, Ts, *_ = setup(dtype)
    assert_close(tb.materialize(sym=False), T, dtype)
    assert_close(tb.materialize(), Ts, dtype)


def test_pair_logits(dtype):
    tb, _, Ts, *_ = setup(dtype)
    assert_close(tb.pair_logits(2, 7), Ts[:, 2, 7], dtype)
    a, b = torch.tensor([0, 4, 12]), torch.tensor([12, 4, 1])
    assert_close(tb.pair_logits(a, b), Ts[:, a, b].T, dtype)


def test_row(dtype):
    tb, _, Ts, *_ = setup(dtype)
    assert_close(tb.row(5, 2), Ts[5, 2], dtype)


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_interaction_chunked(chunk):
    tb, _, Ts, *_ = setup()
    assert_close(tb.interaction(5, chunk_size=chunk), Ts[5])


def test_eig_through_residual_space(dtype):
    tb, _, Ts, W_E, W_U, w = setup(dtype)
    te = tb.eig(5)
    assert te.token_vectors.shape == (V, D)
    assert_close(te.matrix(), Ts[5], dtype, scale=10)  # W_E Q_u W_Eᵀ = Σ λ (W_E v)(W_E v)ᵀ
    assert_close(torch.sum(te.values * te.token_vectors**2, 1), Ts[5].diagonal(), dtype, scale=10)
    # the residual-space truncation error is the dropped λ² (residual metric)
    Q = BilinearTensor(w.W_l, w.W_r, w.W_out).interaction(W_U[:, 5])
    assert_close(te.eigen.truncation_error(2), (Q - te.eigen.matrix(2)).square().sum(), dtype, scale=10)


def test_eig_fallback_without_residual():
    g = torch.Generator().manual_seed(1)
    Lf, Rf, Pf = torch.randn(V, M, generator=g), torch.randn(V, M, generator=g), torch.randn(M, 4, generator=g)
    tb = TokenBilinear(Lf.double(), Rf.double(), Pf.double())
    T = tb.materialize()
    te = tb.eig(2)
    assert_close(te.matrix(), T[2])
    with pytest.raises(MaterializeTooLargeError):
        tb.eig(2, max_bytes=8)


@pytest.mark.parametrize("largest", [True, False])
def test_top_pairs_equal_dense_search(largest):
    tb, _, Ts, *_ = setup()
    c, k = 4, 6
    vals, a, b = tb.top_pairs(c, k=k, chunk_size=3, largest=largest)
    iu = torch.triu_indices(V, V)
    dense = Ts[c][iu[0], iu[1]]
    ref = dense.topk(k, largest=largest).values
    assert_close(vals, ref)
    assert torch.all(a <= b)
    assert_close(Ts[c][a, b], vals)


def test_top_pairs_single_chunk_matches_many():
    tb, *_ = setup(seed=7)
    v1, a1, b1 = tb.top_pairs(1, k=10, chunk_size=1)
    v2, a2, b2 = tb.top_pairs(1, k=10, chunk_size=V)
    assert_close(v1, v2)  # equal up to GEMM blocking order
    assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_bigram_diagonal(dtype):
    tb, T, *_ = setup(dtype)
    table = tb.bigram_diagonal()
    assert table.shape == (V, V)
    assert_close(table, T.diagonal(dim1=1, dim2=2).T, dtype)


def test_token_hosvd_gram(dtype):
    tb, _, Ts, *_ = setup(dtype, V_out=8)
    flat = Ts.reshape(8, -1)
    assert_close(tb.gram(), flat @ flat.T, dtype)


def test_head_mlp_tensor_uses_other_right_factor():
    """eh tensor: Rf = W_E W_OV W_r; same CP machinery (check_weight_only_queries Q6)."""
    _, _, _, W_E, W_U, w = setup()
    W_OV = torch.randn(D, 3, dtype=torch.float64) @ torch.randn(3, D, dtype=torch.float64)
    tb = TokenBilinear.from_weights(W_E, w.W_l, w.W_r, w.W_out, W_U, W_E_right=W_E @ W_OV)
    B = BilinearTensor(w.W_l, w.W_r, w.W_out).materialize()
    T_eh = torch.einsum("oc,oij,ai,bj->cab", W_U, B, W_E, W_E @ W_OV)
    assert_close(tb.materialize(sym=False), T_eh)
    assert tb.residual is None  # no residual eigen route when the two inputs differ


def test_guards_and_index_errors():
    tb, *_ = setup()
    with pytest.raises(MaterializeTooLargeError, match=f"needs {V**3 * 8:,} bytes"):
        tb.materialize(max_bytes=1000)
    with pytest.raises(IndexError, match=r"c=13 is out of range \[0, 13\)"):
        tb.row(13, 0)
    with pytest.raises(IndexError, match="b="):
        tb.pair_logits(0, torch.tensor([1, 99]))
    with pytest.raises(ValueError, match="k=0 must be in"):
        tb.top_pairs(0, k=0)


def test_modular_addition_spectrum():
    """§6: the exact Fourier solution has Q_c eigenvalues ±½ (embedding space), rank 4K."""
    p, freqs = 7, [1, 2]
    a = torch.arange(p, dtype=torch.float64)
    cols = []
    for f in freqs:
        w_ = 2 * torch.pi * f / p
        cols += [torch.cos(w_ * a), torch.sin(w_ * a)]
    E = torch.stack(cols, 1)  # [p, 2K]
    K = len(freqs)
    d = 4 * K  # x = [emb(a), emb(b)]
    W_l = torch.zeros(d, 4 * K, dtype=torch.float64)
    W_r = torch.zeros(d, 4 * K, dtype=torch.float64)
    W_out = torch.zeros(4 * K, p, dtype=torch.float64)
    c = torch.arange(p, dtype=torch.float64)
    for i, f in enumerate(freqs):
        w_ = 2 * torch.pi * f / p
        ca, sa, cb, sb = 2 * i, 2 * i + 1, 2 * K + 2 * i, 2 * K + 2 * i + 1
        for j, (l, r, coef) in enumerate([(ca, cb, torch.cos(w_ * c)), (sa, sb, -torch.cos(w_ * c)),
                                          (sa, cb, torch.sin(w_ * c)), (ca, sb, torch.sin(w_ * c))]):
            W_l[l, 4 * i + j] = 1
            W_r[r, 4 * i + j] = 1
            W_out[4 * i + j] = coef
    bt = BilinearTensor(W_l, W_r, W_out)
    x = torch.cat([E[:, None, :].expand(p, p, 2 * K), E[None, :, :].expand(p, p, 2 * K)], -1)
    logits = bt(x)  # [p, p, p]
    target = (torch.arange(p)[:, None] + torch.arange(p)[None, :]) % p
    assert torch.equal(logits.argmax(-1), target)
    eg = bt.eig(torch.eye(p, dtype=torch.float64)[3])
    nz = eg.values[eg.values.abs() > 1e-9]
    assert len(nz) == 4 * K
    assert_close(nz.abs(), torch.full((4 * K,), 0.5, dtype=torch.float64))
    assert int((nz > 0).sum()) == 2 * K
