"""Top-k spectra on exactly known spectra: every method, repeated and ± paired eigenvalues.

A spectrum is built through the factors, not through the solver: with W_l = W_r = O (orthogonal)
and no W_out, Q_u = ½(O diag(u) Oᵀ + O diag(u) Oᵀ) = O diag(u) Oᵀ, so u *is* the spectrum and the
columns of O are the eigenvectors. Expected values are sorted lists of |u|, written independently.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked_bilinear.tensor import BilinearTensor
from hooked_bilinear.tensor.block_krylov import block_krylov

from ._helpers import assert_close, make_weights, own_errors


def orthogonal(d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))[0].to(dtype)


def known(spectrum: list[float], d: int, seed: int = 0, dtype=torch.float64, m_extra: int = 0):
    """(BilinearTensor, u, Q): Q_u has eigenvalues spectrum + zeros. ``m_extra`` dead neurons pad d_mlp."""
    lam = torch.zeros(d, dtype=dtype)
    lam[: len(spectrum)] = torch.tensor(spectrum, dtype=dtype)
    O = orthogonal(d, seed, dtype)
    W = torch.cat([O, torch.randn(d, m_extra, dtype=dtype)], dim=1)
    u = torch.cat([lam, torch.zeros(m_extra, dtype=dtype)])
    return BilinearTensor(W, W), u, (O * lam) @ O.T


def top_abs(Q: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigvalsh(Q.double()).abs().sort(descending=True).values[:k]


def check_pairs(values, vectors, Q, k, tol):
    """|values| are the true top-k |λ|, vectors orthonormal eigenvectors (Q V = V Λ)."""
    scale = float(Q.abs().max())
    assert values.shape == (k,) and vectors.shape == (Q.shape[0], k)
    assert_close(values.abs().double(), top_abs(Q, k), scale=tol / 1e-10)
    eye = torch.eye(k, dtype=vectors.dtype)
    assert float((vectors.T @ vectors - eye).abs().max()) < tol * 1e3
    assert float((Q @ vectors - vectors * values).abs().max()) < tol * 1e3 * scale


# The case: diag(5, 5, 5, −5, 4, …): single-vector Lanczos gave top-3 |λ| = 5, 5, 4.
DEGENERATE = [5.0, 5.0, 5.0, -5.0, 4.0, -3.0, 3.0, -3.0, 3.0, 1.0]


@pytest.mark.parametrize("method", ["dense", "block", "lanczos", "auto"])
@pytest.mark.parametrize("k", [3, 4, 5, 9])
def test_eig_every_method_on_repeated_and_paired(method, k):
    bt, u, Q = known(DEGENERATE, d=48, m_extra=5)
    eg = bt.eig(u, k=k, method=method)
    check_pairs(eg.values, eg.vectors, Q, k, 1e-10)
    if k == 4:  # the four eigenvalues of |λ| = 5 span exactly the ±5 eigenspaces
        P = eg.vectors @ eg.vectors.T
        O = orthogonal(48)
        assert_close(P, O[:, :4] @ O[:, :4].T, scale=1e3)


@pytest.mark.parametrize("method", ["dense", "block", "auto"])
def test_spectra_top_k_every_method(method, dtype):
    specs = [DEGENERATE, [-2.0] * 6 + [2.0] * 6, [1.0, -1.0, 1.0, -1.0, 0.5]]
    d, k = 40, 5
    O = orthogonal(d, 1, dtype)
    U = torch.zeros(len(specs), d, dtype=dtype)
    for i, s in enumerate(specs):
        U[i, : len(s)] = torch.tensor(s, dtype=dtype)
    bt = BilinearTensor(O, O)
    sp = bt.spectra(U, top=k, method=method, vectors=True)
    assert sp.values.shape == (3, k) and sp.vectors.shape == (3, d, k) and bool(sp.converged.all())
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for i in range(3):
        check_pairs(sp.values[i], sp.vectors[i], (O * U[i]) @ O.T, k, tol)
    assert not sp.complete and not sp[0].complete


def test_auto_above_1024_keeps_every_copy():
    """The issue's reproduction at d > 1024, where "auto" now picks the block solver."""
    bt, u, Q = known([5.0, 5.0, 5.0, -5.0, 4.0] + [0.5] * 20, d=1100)
    eg = bt.eig(u, k=3)
    assert_close(eg.values.abs(), torch.full((3,), 5.0, dtype=torch.float64), scale=1e2)
    eg4 = bt.eig(u, k=5)
    assert sorted(eg4.values.tolist()) == pytest.approx([-5.0, 4.0, 5.0, 5.0, 5.0], rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    mults=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=4),
    d=st.integers(12, 40),
    k=st.integers(1, 10),
    seed=st.integers(0, 10**6),
)
def test_block_on_random_multiplicities(mults, d, k, seed):
    """Distinct magnitudes 4, 3, 2, 1 with (positive, negative) copy counts drawn at random."""
    spectrum: list[float] = []
    for level, (pos, neg) in zip((4.0, 3.0, 2.0, 1.0), mults):
        spectrum += [level] * pos + [-level] * neg
    spectrum = spectrum[:d]
    k = min(k, d)
    bt, u, Q = known(spectrum, d=d, seed=seed % 97)
    eg = bt.eig(u, k=k, method="block", seed=seed)
    check_pairs(eg.values, eg.vectors, Q, k, 1e-10)


@pytest.mark.parametrize("k", [1, 6])
def test_block_matches_float64_dense_on_random_weights(dtype, k):
    w = make_weights(d=64, m=96, d_out=10, dtype=dtype, seed=2, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    U = torch.randn(7, 10, dtype=dtype, generator=torch.Generator().manual_seed(3))
    sp = bt.spectra(U, top=k, method="block", vectors=True, chunk_size=3)
    for i in range(7):
        Q = bt.to(torch.float64).interaction(U[i].double())
        ref = torch.linalg.eigvalsh(Q)
        ref = ref[ref.abs().argsort(descending=True)[:k]]
        rel = (sp.values[i].double() - ref).abs().max() / ref.abs().max()
        assert float(rel) < (1e-9 if dtype == torch.float64 else 1e-4)
        assert float((Q.to(dtype) @ sp.vectors[i] - sp.vectors[i] * sp.values[i]).abs().max()) < (
            1e-7 if dtype == torch.float64 else 1e-3) * float(ref.abs().max())


def test_block_is_deterministic_and_reports_non_convergence():
    w = make_weights(d=64, m=96, d_out=10, seed=4, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    U = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a, b = bt.spectra(U, top=4, method="block"), bt.spectra(U, top=4, method="block")
    assert torch.equal(a.values, b.values)
    from hooked_bilinear.tensor._kernels import block_apply_coeffs

    apply = block_apply_coeffs(bt.W_l, bt.W_r, U @ bt.W_out.T)
    _, _, ok = block_krylov(apply, 4, 64, 4, bt.W_l, max_iters=1, tol=1e-14)
    assert not bool(ok.any())


def test_dense_top_matches_full_spectra():
    w = make_weights(d=9, m=12, d_out=5, seed=6, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    U = torch.randn(3, 5, dtype=torch.float64)
    full = bt.spectra(U, vectors=True)
    top = bt.spectra(U, top=4, method="dense", vectors=True)
    assert torch.equal(top.values, full.values[:, :4])
    assert torch.equal(top.vectors, full.vectors[:, :, :4])


@own_errors
def test_spectra_top_argument_errors():
    bt = BilinearTensor(torch.eye(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64))
    U = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"top=0 must be an int in \[1, d_in=6\]"):
        bt.spectra(U, top=0)
    with pytest.raises(ValueError, match="top=7"):
        bt.spectra(U, top=7, method="block")
    with pytest.raises(ValueError, match="pass top=k"):
        bt.spectra(U, method="block")
    with pytest.raises(ValueError, match="method must be"):
        bt.spectra(U, top=2, method="lobpcg")
    with pytest.raises(ValueError, match=r"k=9 must be in \[1, d=6\]"):
        block_krylov(lambda Y, i: Y, 1, 6, 9, U)


def test_eig_warns_when_the_block_solver_stops_early(monkeypatch):
    import functools

    import hooked_bilinear.tensor.spectral as spectral

    monkeypatch.setattr(spectral, "block_krylov", functools.partial(block_krylov, max_iters=1, tol=1e-15))
    bt, u, _ = known(DEGENERATE, d=48, m_extra=5)
    with pytest.warns(RuntimeWarning, match="stopped before every residual met tol"):
        bt.eig(u, k=4, method="block")
