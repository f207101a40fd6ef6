"""Interaction matrices Q_u and their eigendecomposition (math.md §5 items 4-5, §1.4-1.5)."""

import pytest
import torch

from hooked_bilinear.tensor import BilinearTensor, Eigen

from ._helpers import assert_close, make_weights, own_errors, reference_mlp


def make(d=7, m=11, d_out=None, dtype=torch.float64, seed=0, bias=False) -> BilinearTensor:
    w = make_weights(d, m, d_out, dtype, seed, bias)
    return BilinearTensor(w.W_l, w.W_r, w.W_out, w.b_l, w.b_r, w.b_out)


# ------------------------------------------------------------------ §5.4
def test_Q_u_equals_contracted_B_sym(dtype):
    bt = make(d=6, m=9, d_out=5, dtype=dtype)
    u = torch.randn(5, dtype=dtype)
    Q = bt.interaction(u)
    assert Q.shape == (6, 6)
    assert_close(Q, torch.einsum("o,oij->ij", u, bt.materialize(sym=True)), dtype)
    assert_close(Q, Q.T, dtype)


def test_quadratic_form_equals_projected_mlp(dtype):
    w = make_weights(dtype=dtype, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    u, x = torch.randn(2, w.d, dtype=dtype)
    eg = bt.eig(u)
    target = u @ reference_mlp(w, x)
    assert_close(x @ bt.interaction(u) @ x, target, dtype)
    assert_close(eg.reconstruct(x), target, dtype, scale=10)  # Σ λ_i (v_i·x)²
    assert_close(eg.exact(x), target, dtype)


def test_matvec_equals_dense(dtype):
    bt = make(dtype=dtype)
    u = torch.randn(7, dtype=dtype)
    y = torch.randn(4, 7, dtype=dtype)
    assert_close(bt.matvec(u, y), y @ bt.interaction(u), dtype)
    assert_close(bt.matvec(u, y[0]), bt.interaction(u) @ y[0], dtype)  # Q symmetric: row or column form


def test_batched_chunked_interaction_matches_single(dtype):
    bt = make(d=5, m=8, d_out=4, dtype=dtype)
    U = torch.randn(7, 4, dtype=dtype)
    Qs = bt.interaction(U, chunk_size=3)
    assert Qs.shape == (7, 5, 5)
    for c in range(7):
        assert_close(Qs[c], bt.interaction(U[c]), dtype)
    out = torch.empty(7, 5, 5, dtype=dtype)
    assert bt.interaction(U, chunk_size=2, out=out).data_ptr() == out.data_ptr()
    assert_close(out, Qs, dtype)


@own_errors
def test_out_buffer_is_checked():
    bt = make(d=5, m=8, d_out=4)
    with pytest.raises(ValueError, match=r"out has shape \(7, 5, 4\)"):
        bt.interaction(torch.randn(7, 4, dtype=torch.float64), out=torch.empty(7, 5, 4, dtype=torch.float64))


def test_in_place_symmetrisation_by_blocks():
    from hooked_bilinear.tensor._kernels import _add_transpose_

    A = torch.randn(23, 23, dtype=torch.float64)
    ref = A + A.T
    _add_transpose_(A, block=5)  # off-diagonal and ragged blocks
    assert torch.equal(A, ref)


def test_single_direction_path_matches_batched_path():
    bt = make(d=300, m=600, seed=2)  # 2 row blocks of ~1 MiB, 2 symmetrisation blocks of 256
    U = torch.randn(2, 300, dtype=torch.float64)
    assert_close(bt.interaction(U[0]), bt.interaction(U)[0])


def test_augmented_interaction_holds_bias_parts(dtype):
    w = make_weights(dtype=dtype)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out, w.b_l, w.b_r, w.b_out)
    u, x = torch.randn(2, w.d, dtype=dtype)
    Qa = bt.interaction(u, augmented=True)
    assert Qa.shape == (w.d + 1, w.d + 1)
    xa = torch.cat([x, torch.ones(1, dtype=dtype)])
    assert_close(xa @ Qa @ xa, u @ (reference_mlp(w, x) - w.b_out), dtype)
    d = w.d
    assert_close(Qa[:d, :d], bt.interaction(u), dtype)
    assert_close(2 * Qa[:d, d], u @ bt.linear_part, dtype)  # ½ on each side
    assert_close(Qa[d, d], u @ bt.constant_part, dtype)
    ya = torch.randn(3, d + 1, dtype=dtype)
    assert_close(bt.matvec(u, ya, augmented=True), ya @ Qa, dtype)
    eg = bt.eig(u, augmented=True)
    assert_close(eg.exact(xa), xa @ Qa @ xa, dtype)


# ------------------------------------------------------------------ §5.5
def test_eigendecomposition_is_orthonormal_and_exact(dtype):
    bt = make(dtype=dtype)
    u = torch.randn(7, dtype=dtype)
    Q = bt.interaction(u)
    eg = bt.eig(u, method="dense")
    V, lam = eg.vectors, eg.values
    assert_close(V @ torch.diag(lam) @ V.T, Q, dtype)
    assert_close(V.T @ V, torch.eye(7, dtype=dtype), dtype)
    assert torch.all(lam.abs()[:-1] >= lam.abs()[1:]), "eigenvalues must be sorted by |λ| descending"
    assert eg.complete and len(eg) == 7


@pytest.mark.parametrize("m", [1, 2, 3])
def test_rank_at_most_twice_d_mlp(m):
    bt = make(d=9, m=m)
    Q = bt.interaction(torch.randn(9, dtype=torch.float64))
    rank = int((torch.linalg.eigvalsh(Q).abs() > 1e-10).sum())
    assert rank == 2 * m  # generic weights reach the bound exactly


def test_single_neuron_is_a_difference_of_squares(dtype):
    d = 8
    l, r = torch.randn(2, d, 1, dtype=dtype)
    bt = BilinearTensor(l, r, torch.ones(1, 1, dtype=dtype))
    eg = bt.eig(torch.ones(1, dtype=dtype), k=2)
    lr, nl, nr = float(l[:, 0] @ r[:, 0]), float(l.norm()), float(r.norm())
    expected = torch.tensor(sorted([(lr + nl * nr) / 2, (lr - nl * nr) / 2]), dtype=dtype)
    assert_close(eg.values.sort().values, expected, dtype)
    assert eg.values.max() >= 0 >= eg.values.min()
    rest = torch.linalg.eigvalsh(bt.interaction(torch.ones(1, dtype=dtype)))
    assert int((rest.abs() > 1e-5 * nl * nr).sum()) == 2


# ------------------------------------------------------------------ Eigen result
def test_truncation_error_is_frobenius_of_dropped(dtype):
    bt = make(dtype=dtype)
    u = torch.randn(7, dtype=dtype)
    Q = bt.interaction(u)
    eg = bt.eig(u)
    for k in (0, 2, 5, 7):
        err = (Q - eg.matrix(k)).square().sum()  # ‖Q − Q_k‖_F²
        tol = 1e3 * torch.finfo(dtype).eps * float(eg.frob_sq)
        assert abs(float(eg.truncation_error(k) - err)) < tol
        assert abs(float(eg.truncation_error(k) - eg.values[k:].square().sum())) < tol
    assert_close(eg.frob_sq, Q.square().sum(), dtype)


def test_reconstruction_error_and_activations():
    bt = make()
    u, x = torch.randn(2, 7, dtype=torch.float64)
    eg = bt.eig(u)
    act = eg.activations(x)
    assert_close(act, x @ eg.vectors)
    exact = x @ bt.interaction(u) @ x
    for k in (1, 3):
        approx = (eg.values[:k] * act[:k] ** 2).sum()
        assert_close(eg.reconstruct(x, k), approx)
        assert_close(eg.reconstruction_error(x, k), exact - approx)
    assert abs(float(eg.reconstruction_error(x, 7))) < 1e-10 * float(exact.abs())
    batch = torch.randn(4, 3, 7, dtype=torch.float64)
    assert eg.reconstruct(batch, 2).shape == (4, 3)


def test_effective_rank():
    vals = torch.tensor([3.0, -3.0, 0.0, 0.0], dtype=torch.float64)
    eg = Eigen(vals, torch.eye(4, dtype=torch.float64))
    assert float(eg.effective_rank()) == pytest.approx(2.0)
    one = Eigen(torch.tensor([5.0, 0.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    assert float(one.effective_rank()) == pytest.approx(1.0)


def test_to_input_space_is_exact(dtype):
    bt = make(dtype=dtype)
    u = torch.randn(7, dtype=dtype)
    W_E = torch.randn(13, 7, dtype=dtype)
    eg = bt.eig(u)
    t = eg.to_input_space(W_E)
    assert t.shape == (13, 7)
    assert_close((t * eg.values) @ t.T, W_E @ bt.interaction(u) @ W_E.T, dtype)


# ------------------------------------------------------------------ Lanczos
@pytest.mark.parametrize("k", [1, 4, 10])
def test_lanczos_matches_dense_top_k(k):
    bt = make(d=40, m=30, seed=3)
    u = torch.randn(40, dtype=torch.float64)
    dense = bt.eig(u, method="dense")
    lz = bt.eig(u, k=k, method="lanczos")
    assert_close(lz.values, dense.values[:k], scale=1e2)
    overlap = (lz.vectors.T @ dense.vectors[:, :k]).abs().diagonal()
    assert torch.all(overlap > 1 - 1e-8)
    assert not lz.complete
    assert_close(lz.truncation_error(k), dense.truncation_error(k), scale=1e2)


def test_lanczos_finds_both_ends_float32():
    bt = make(d=64, m=20, seed=5, dtype=torch.float32)
    u = torch.randn(64)
    dense = torch.linalg.eigvalsh(bt.interaction(u).double())
    lz = bt.eig(u, k=6, method="lanczos")
    top = dense[dense.abs().argsort(descending=True)[:6]]
    assert torch.allclose(lz.values.double(), top, rtol=1e-4, atol=1e-4 * float(top.abs().max()))
    assert (lz.values > 0).any() and (lz.values < 0).any()


def test_lanczos_full_dimension_is_exact():
    bt = make(d=12, m=3)
    u = torch.randn(12, dtype=torch.float64)
    lz = bt.eig(u, k=12, method="lanczos")  # rank 6: the Krylov space breaks down and restarts
    assert_close(lz.matrix(), bt.interaction(u), scale=1e2)


def test_lanczos_recovers_repeated_eigenvalues():
    """"lanczos" is the block solver now: a block of b ≥ k rows keeps every copy of ±1 and 0.3."""
    d = 120
    vals = torch.zeros(d, dtype=torch.float64)
    vals[:5], vals[5:10], vals[10:14] = 1.0, -1.0, 0.3
    O, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    bt = BilinearTensor(O, O)  # Q_u = O diag(u) Oᵀ, so u = vals gives exactly this spectrum
    eg = bt.eig(vals, k=14, method="lanczos")
    v, V = eg.values, eg.vectors
    assert_close(v.abs(), vals[:14].abs(), scale=1e3)
    assert int((v > 0.5).sum()) == 5 and int((v < -0.5).sum()) == 5
    assert_close((V * v) @ V.T, (O * vals) @ O.T, scale=1e3)


@own_errors
def test_eig_argument_errors():
    bt = make()
    u = torch.randn(7, dtype=torch.float64)
    with pytest.raises(ValueError, match="method must be"):
        bt.eig(u, method="arpack")
    with pytest.raises(ValueError, match="k=8 must be in"):
        bt.eig(u, k=8)
    with pytest.raises(ValueError, match="use spectra"):
        bt.eig(torch.randn(2, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="last dim must be d_out=7"):
        bt.interaction(torch.randn(6, dtype=torch.float64))
