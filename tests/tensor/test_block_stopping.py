"""The block solver's knobs: the eigenvalue stopping rule (``tol``), ``vector_tol``, ``block``, and the
start-count rule that keeps every copy of a repeated eigenvalue with a block smaller than its multiplicity.

Spectra are either exactly known (built through the factors, as in test_block_spectra.py) or computed
by float64 dense ``eigvalsh`` of the formed Q_u; never by the solver under test.
"""

import pytest
import torch

import hooked_bilinear.tensor.block_krylov as bk
from hooked_bilinear.tensor import BilinearTensor
from hooked_bilinear.tensor._kernels import block_apply_coeffs
from hooked_bilinear.tensor._krylov_steps import error_bounds, needs_more_starts
from hooked_bilinear.tensor.block_krylov import block_krylov

from ._helpers import make_weights, own_errors
from .test_block_spectra import check_pairs, known


def random_case(n=5, d=80, m=120, seed=7):
    w = make_weights(d=d, m=m, d_out=12, seed=seed, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    U = torch.randn(n, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    ref = []
    for u in U:
        ev = torch.linalg.eigvalsh(bt.interaction(u))
        ref.append(ev[ev.abs().argsort(descending=True)])
    return bt, U, torch.stack(ref)


def counted(bt, U):
    """(apply, calls): the batched product, counting the rows it multiplies per direction."""
    inner = block_apply_coeffs(bt.W_l, bt.W_r, bt.neuron_coeffs(U))
    rows = [0]

    def apply(Y, idx):
        rows[0] += Y.shape[0] * Y.shape[1]
        return inner(Y, idx)

    return apply, rows


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-11])
def test_values_within_tol_of_dense(tol):
    bt, U, ref = random_case()
    k = 6
    sp = bt.spectra(U, top=k, method="block", tol=tol)
    assert bool(sp.converged.all())
    err = (sp.values - ref[:, :k]).abs().amax(dim=1) / ref[:, 0].abs()
    assert float(err.max()) <= tol, f"max relative error {float(err.max()):.2e} above tol={tol}"


def test_looser_tol_needs_fewer_products_and_values_stop_before_vectors():
    bt, U, _ = random_case()
    counts = {}
    for name, kw in {"1e-3": {"tol": 1e-3}, "1e-10": {"tol": 1e-10},
                     "vectors": {"tol": 1e-10, "vector_tol": 1e-10}}.items():
        apply, rows = counted(bt, U)
        block_krylov(apply, U.shape[0], bt.d_in, 6, bt.W_l, block=2, **kw)
        counts[name] = rows[0]
    assert counts["1e-3"] < counts["1e-10"] < counts["vectors"], counts


@pytest.mark.parametrize("vector_tol", [1e-3, 1e-9])
def test_vector_tol_bounds_every_residual(vector_tol):
    bt, U, _ = random_case()
    k = 5
    sp = bt.spectra(U, top=k, method="block", vectors=True, vector_tol=vector_tol)
    for i in range(U.shape[0]):
        Q = bt.interaction(U[i])
        r = (Q @ sp.vectors[i] - sp.vectors[i] * sp.values[i]).norm(dim=0)
        assert float(r.max()) <= vector_tol * float(sp.values[i, 0].abs())


# multiplicity 5 of +5 and 2 of −5: more copies than any block below 5 holds at its start
# plus a bulk of 40 distinct small eigenvalues, so that no Krylov space becomes invariant early (an invariant
# space would let the solver restart from fresh rows and find the copies anyway)
REPEATED = [5.0] * 5 + [-5.0] * 2 + [4.0, -3.5, 3.0] + torch.linspace(-1, 1, 40).tolist()


@pytest.mark.parametrize("block", [1, 2, 3, 7])
@pytest.mark.parametrize("k", [6, 8])
def test_small_blocks_keep_every_copy(block, k):
    bt, u, Q = known(REPEATED, d=60, m_extra=4)
    apply = block_apply_coeffs(bt.W_l, bt.W_r, bt.neuron_coeffs(u[None]))
    v, V, ok = block_krylov(apply, 1, 60, k, bt.W_l, block=block, vector_tol=1e-10)
    assert bool(ok.all())
    check_pairs(v[0], V[0], Q, k, 1e-10)


def test_without_the_start_count_rule_a_block_of_one_misses_copies(monkeypatch):
    """The rule is what makes a small block exact: switched off, block=1 finds one copy of 5 and of −5."""
    spectrum = REPEATED[:10] + torch.linspace(-1, 1, 180).tolist()  # a long bulk: no early invariant space
    bt, u, Q = known(spectrum, d=200)
    apply = block_apply_coeffs(bt.W_l, bt.W_r, bt.neuron_coeffs(u[None]))
    monkeypatch.setattr(bk, "needs_more_starts", lambda theta, *a: torch.zeros(theta.shape[0], dtype=torch.bool))
    # a loose tol stops before rounding errors grow the missing copies (as they eventually do in Lanczos)
    kw = {"block": 1, "tol": 1e-4, "check_every": 1}
    v, _, _ = block_krylov(apply, 1, 200, 4, bt.W_l, **kw)
    assert sorted(v[0].abs().tolist(), reverse=True) == pytest.approx([5.0, 5.0, 4.0, 3.5], rel=1e-3)
    monkeypatch.undo()
    v, _, _ = block_krylov(apply, 1, 200, 4, bt.W_l, **kw)
    assert v[0].abs().tolist() == pytest.approx([5.0] * 4, rel=1e-3)


def test_needs_more_starts_by_hand():
    theta = torch.tensor([[5.0, 5.0, -5.0, 4.0, 1.0],    # two copies of 5 from two starts, 4 in the top 4
                          [5.0, 5.0, -5.0, 4.0, 1.0],    # the same from three starts: complete
                          [5.0, 5.0, 5.0, 5.0, 1.0],     # the cluster fills the top 4: values cannot change
                          [5.0, 4.0, 3.0, 2.0, 1.0],     # one start cannot tell a single 5 from a repeated one
                          [5.0, 4.0, 3.0, 2.0, 1.0]])    # two starts can
    starts = torch.tensor([2, 3, 1, 1, 2])
    close = torch.full((5, 1), 1e-6)
    assert needs_more_starts(theta, 4, starts, close).tolist() == [True, False, False, True, False]
    assert needs_more_starts(theta, 2, starts, close).tolist() == [False, False, False, True, False]


def test_error_bounds_by_hand_and_against_true_errors():
    theta = torch.tensor([[3.0, -2.0, 1.0]], dtype=torch.float64)
    resid = torch.tensor([[0.1, 0.5]], dtype=torch.float64)
    # nearest other Ritz value: for 3 it is 1 (gap 2), for −2 it is 1 (gap 3)
    expect = torch.tensor([[min(0.1, 0.01 / 2), min(0.5, 0.25 / 3)]], dtype=torch.float64)
    assert torch.allclose(error_bounds(theta, resid), expect)
    # Ritz pairs of a random symmetric matrix from a Krylov space: the bound holds for the extreme ones
    g = torch.Generator().manual_seed(0)
    A = torch.randn(200, 200, dtype=torch.float64, generator=g)
    A = A + A.T
    A[0, 0] = 60.0  # a separated top eigenvalue
    lam = torch.linalg.eigvalsh(A)
    V = [torch.randn(200, dtype=torch.float64, generator=g)]
    for _ in range(24):
        V.append(A @ V[-1])
    Qb = torch.linalg.qr(torch.stack(V, dim=1))[0]
    th, S = torch.linalg.eigh(Qb.T @ A @ Qb)
    X = Qb @ S
    r = (A @ X - X * th).norm(dim=0)
    i = int(th.abs().argmax())
    order = th.abs().argsort(descending=True)
    bound = error_bounds(th[order][None], r[order][None, :1])[0, 0]
    true = (lam - th[i]).abs().min()
    assert float(true) <= float(bound) + 1e-12 and float(bound) < float(r[i])


@own_errors
def test_knob_errors():
    apply = lambda Y, i: Y  # noqa: E731
    like = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"tol=0\.0 must be a positive float"):
        block_krylov(apply, 1, 6, 2, like, tol=0.0)
    with pytest.raises(ValueError, match=r"vector_tol=-1\.0 must be a positive float"):
        block_krylov(apply, 1, 6, 2, like, vector_tol=-1.0)
    with pytest.raises(ValueError, match=r"block=0 must be a positive int"):
        block_krylov(apply, 1, 6, 2, like, block=0)


def test_default_block_is_exact_through_spectra_and_deterministic():
    bt, u, Q = known(REPEATED, d=60, m_extra=4)
    U = torch.stack([u, -u, 0.5 * u])
    a = bt.spectra(U, top=8, method="block", vectors=True)
    b = bt.spectra(U, top=8, method="block", vectors=True)
    assert torch.equal(a.values, b.values)
    for i, s in enumerate((1.0, -1.0, 0.5)):
        check_pairs(a.values[i], a.vectors[i], s * Q, 8, 1e-10)


def test_default_block_fills_gemms():
    """Block 2 once n·2 rows fill a product; a single operator (eig) gets k + 2 rows, capped at 128 per product."""
    assert bk.default_block(8, 320) == 2 and bk.default_block(8, 64) == 2
    assert bk.default_block(8, 16) == 8 and bk.default_block(32, 1) == 34 and bk.default_block(200, 1) == 128


def test_out_of_iterations_returns_the_best_ritz_pairs():
    bt, U, ref = random_case(n=3)
    apply = block_apply_coeffs(bt.W_l, bt.W_r, bt.neuron_coeffs(U))
    v, V, ok = block_krylov(apply, 3, bt.d_in, 4, bt.W_l, block=2, max_iters=3, tol=1e-14)
    assert not bool(ok.any())
    # Ritz values of a subspace lie inside the spectrum and are not the zeros the buffers start from
    assert bool((v.abs() > 0).all()) and bool((v.abs() <= ref[:, :1].abs() * (1 + 1e-12)).all())
    assert torch.allclose(V.mT @ V, torch.eye(4, dtype=V.dtype).expand(3, 4, 4), atol=1e-10)
