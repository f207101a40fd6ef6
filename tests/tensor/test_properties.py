"""Property-based checks of the identities over random shapes, batch sizes and dtypes (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hooked_bilinear.tensor import BilinearTensor

from ._helpers import RTOL, make_weights, reference_mlp, rel_err

shapes = st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 8))  # d_in, d_mlp, d_out
dtypes = st.sampled_from([torch.float64, torch.float32])
SETTINGS = settings(max_examples=25, deadline=None)


def build(d, m, d_out, dtype, seed, bias=True):
    w = make_weights(d, m, d_out, dtype, seed, bias)
    return w, BilinearTensor(w.W_l, w.W_r, w.W_out, w.b_l, w.b_r, w.b_out)


def close(a, b, dtype, scale=1.0):
    return rel_err(a, b) < RTOL[dtype] * scale


@SETTINGS
@given(shapes, dtypes, st.integers(0, 2**16), st.lists(st.integers(1, 4), max_size=2))
def test_mlp_and_parts(shape, dtype, seed, batch):
    w, bt = build(*shape, dtype, seed)
    x = torch.randn(*batch, shape[0], dtype=dtype)
    ref = reference_mlp(w, x)
    assert close(bt.mlp(x), ref, dtype)
    parts = bt.interaction_part(x) + x @ bt.linear_part.T + bt.constant_part + w.b_out
    assert close(parts, ref, dtype, scale=10)


@SETTINGS
@given(shapes, dtypes, st.integers(0, 2**16), st.integers(1, 5), st.integers(1, 4))
def test_batched_interaction_and_spectra(shape, dtype, seed, k, chunk):
    _, bt = build(*shape, dtype, seed, bias=False)
    U = torch.randn(k, shape[2], dtype=dtype)
    Bs = bt.materialize(sym=True)
    Q = bt.interaction(U, chunk_size=chunk)
    assert close(Q, torch.einsum("ko,oij->kij", U, Bs), dtype, scale=10)
    sp = bt.spectra(U, chunk_size=chunk)
    ref = torch.linalg.eigvalsh(Q)
    ref = ref.gather(-1, ref.abs().argsort(-1, descending=True))
    assert close(sp.values, ref, dtype, scale=10)
    rank = (sp.values.abs() > 1e-4 * sp.values.abs().max().clamp_min(1e-30)).sum(-1)
    assert bool((rank <= 2 * shape[1]).all())


@SETTINGS
@given(shapes, dtypes, st.integers(0, 2**16))
def test_quadratic_form_and_eigen(shape, dtype, seed):
    w, bt = build(*shape, dtype, seed, bias=False)
    u, x = torch.randn(shape[2], dtype=dtype), torch.randn(shape[0], dtype=dtype)
    eg = bt.eig(u)
    target = u @ reference_mlp(w, x)
    scale = float(u.abs() @ reference_mlp(w, x).abs()) + 1e-30  # cancellation-aware tolerance
    assert abs(float(eg.reconstruct(x) - target)) <= 100 * RTOL[dtype] * scale
    assert close(eg.vectors.T @ eg.vectors, torch.eye(shape[0], dtype=dtype), dtype, scale=10)
    assert close(bt.frobenius_sq(u), bt.interaction(u).square().sum(), dtype, scale=10)


@SETTINGS
@given(shapes, st.integers(0, 2**16))
def test_hosvd_reconstructs_B_sym(shape, seed):
    _, bt = build(*shape, torch.float64, seed, bias=False)
    h = bt.hosvd()
    Bs = bt.materialize(sym=True)
    assert rel_err(h.reconstruct(), Bs) < 1e-6  # components below the √eps cutoff are dropped
    flat = Bs.reshape(shape[2], -1)
    sv = torch.linalg.svdvals(flat)[: len(h)]
    assert rel_err(h.singular_values, sv) < 1e-8
