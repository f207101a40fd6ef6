"""Scalar identities, Gram/HOSVD, basis change and batched spectra (math.md §5 items 6-7)."""

import pytest
import torch

from hooked_bilinear.tensor import BilinearTensor, MaterializeTooLargeError

from ._helpers import assert_close, make_weights


def make(d=6, m=10, d_out=5, dtype=torch.float64, seed=0) -> BilinearTensor:
    w = make_weights(d, m, d_out, dtype, seed, bias=False)
    return BilinearTensor(w.W_l, w.W_r, w.W_out)


# ------------------------------------------------------------------ §5.6 scalar identities
def test_trace_of_Q(dtype):
    bt = make(dtype=dtype)
    U = torch.randn(4, 5, dtype=dtype)
    Q = bt.interaction(U)
    assert_close(bt.trace(U), Q.diagonal(dim1=-2, dim2=-1).sum(-1), dtype)
    D = U[0] @ bt.W_out.T
    assert_close(bt.trace(U[0]), (D * (bt.W_l * bt.W_r).sum(0)).sum(), dtype)


def test_frobenius_equals_uGu(dtype):
    bt = make(dtype=dtype)
    U = torch.randn(4, 5, dtype=dtype)
    fro = bt.interaction(U).square().sum((-1, -2))
    assert_close(bt.frobenius_sq(U), fro, dtype)
    assert_close(torch.einsum("ko,op,kp->k", U, bt.gram(), U), fro, dtype)


def test_gram_equals_flattened_B_sym(dtype):
    bt = make(dtype=dtype)
    flat = bt.materialize(sym=True).reshape(5, -1)
    assert_close(bt.gram(), flat @ flat.T, dtype)


def test_singular_values_equal_svdvals():
    bt = make()
    flat = bt.materialize(sym=True).reshape(5, -1)
    h = bt.hosvd()
    assert len(h) == 5
    assert_close(h.singular_values, torch.linalg.svdvals(flat))
    assert_close(h.explained().sum(), torch.ones((), dtype=torch.float64))


def test_hosvd_reconstruction(dtype):
    bt = make(dtype=dtype)
    h = bt.hosvd()
    assert_close(h.reconstruct(), bt.materialize(sym=True), dtype, scale=10)
    # Q_k are unit-norm and mutually orthogonal (right singular vectors)
    flat = h.interactions.reshape(len(h), -1)
    assert_close(flat @ flat.T, torch.eye(len(h), dtype=dtype), dtype, scale=10)
    assert_close(h.directions.T @ h.directions, torch.eye(len(h), dtype=dtype), dtype)


def test_hosvd_top_component_is_top_right_singular_vector():
    bt = make()
    _, _, Vh = torch.linalg.svd(bt.materialize(sym=True).reshape(5, -1), full_matrices=False)
    h = bt.hosvd(k=2)
    assert len(h) == 2
    assert_close(h.interactions[0].reshape(-1).abs(), Vh[0].abs())
    assert_close(h.reconstruct(1), torch.einsum("o,ij->oij", h.directions[:, 0] * h.singular_values[0], h.interactions[0]))


def test_hosvd_drops_null_directions():
    w = make_weights(d=3, m=2, d_out=8, bias=False)  # d_out > d_in(d_in+1)/2 = 6 forces a null space
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    h = bt.hosvd()
    assert len(h) <= 2  # G = W_outᵀ M W_out has rank ≤ d_mlp
    assert_close(h.reconstruct(), bt.materialize(sym=True))
    assert bt.hosvd(interactions=False).interactions is None


def test_hosvd_guard():
    with pytest.raises(MaterializeTooLargeError, match="HOSVD interaction matrices"):
        make().hosvd(max_bytes=100)


# ------------------------------------------------------------------ §5.7 basis change
def test_pseudo_inverse_basis_change(dtype):
    bt = make(dtype=dtype)
    U = torch.randn(5, 5, dtype=dtype)  # columns u_k, full rank
    Q = bt.interaction(U.T)  # Q_{u_k}
    U_plus = torch.linalg.pinv(U)  # rows u_k⁺
    assert_close(torch.einsum("ko,kij->oij", U_plus, Q), bt.materialize(sym=True), dtype, scale=100)


def test_identity_W_out_hosvd():
    w = make_weights(d=4, m=3, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r)
    assert_close(bt.gram(), bt.neuron_gram())
    assert_close(bt.hosvd().reconstruct(), bt.materialize(sym=True))


# ------------------------------------------------------------------ batched spectra
def test_spectra_match_individual_eig(dtype):
    bt = make(dtype=dtype)
    U = torch.randn(9, 5, dtype=dtype)
    sp = bt.spectra(U, chunk_size=4)
    spv = bt.spectra(U, vectors=True, chunk_size=2)
    assert sp.values.shape == (9, 6) and spv.vectors.shape == (9, 6, 6)
    for c in range(9):
        eg = bt.eig(U[c])
        assert_close(sp.values[c], eg.values, dtype, scale=10)
        assert_close(spv[c].matrix(), bt.interaction(U[c]), dtype, scale=10)
    assert torch.all(sp.values.abs()[:, :-1] >= sp.values.abs()[:, 1:])
    assert_close(sp.effective_rank()[3], bt.eig(U[3]).effective_rank(), dtype, scale=10)
    with pytest.raises(ValueError, match="without vectors"):
        sp[0]


def test_spectra_progress_bar_counts_directions(capsys):
    bt = make(dtype=torch.float64)
    U = torch.randn(9, 5, dtype=torch.float64)
    shown = bt.spectra(U, chunk_size=4, progress=True)
    err = capsys.readouterr().err
    assert "spectra" in err and "9/9" in err
    assert torch.equal(shown.values, bt.spectra(U, chunk_size=4).values)


def test_spectra_vectors_guard():
    bt = make()
    with pytest.raises(MaterializeTooLargeError, match="eigenvectors of all Q_u"):
        bt.spectra(torch.randn(3, 5, dtype=torch.float64), vectors=True, max_bytes=10)


@pytest.mark.parametrize("which", ["W_l", "W_out"])
def test_spectra_with_gradients(which):
    w = make_weights(bias=False)
    p = getattr(w, which).clone().requires_grad_(True)
    bt = BilinearTensor(**{"W_l": w.W_l, "W_r": w.W_r, "W_out": w.W_out, which: p})
    sp = bt.spectra(torch.randn(3, 7, dtype=torch.float64))
    sp.values.abs().sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="out= cannot be used while gradients are tracked"):
        bt.interaction(torch.randn(2, 7, dtype=torch.float64), out=torch.empty(2, 7, 7, dtype=torch.float64))
