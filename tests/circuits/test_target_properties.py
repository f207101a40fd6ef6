"""Targets against the real logits, property-based: the expected value is written here from `model(tokens)`.

Random target kinds (int / per-sequence / per-position token ids, logit differences, directions of
shape [V], [batch, V] and [batch, n_pos, V], next-token), random position lists in any order (negative
ones too), batch sizes 1-4, float32 and float64 models (and decompose(dtype=float64) of either),
levels 1, 2 and lazy. For every draw:

* `d.total` (Σ terms) equals the value computed below by plain indexing of `model(tokens)`;
* `d.reference` equals it too (the reference `check()` uses is the real output, not the readout);
* `d.check()` is within the dtype's tolerance.

A second group breaks the readout on purpose (the old sort-then-pair bug, the old [batch, D] bug) and
checks that `check()` reports it instead of agreeing with itself.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.circuits import target as target_module

from ._models import make_model

N, V = 6, 11  # sequence length of the drawn inputs, d_vocab of the tiny models
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
_MODELS: dict = {}


def model_for(dtype: torch.dtype, pos: str):
    key = (dtype, pos)
    if key not in _MODELS:
        _MODELS[key] = make_model(2, "LN", pos, dtype=dtype, seed=3)
    return _MODELS[key]


def expected(logits: torch.Tensor, toks: torch.Tensor, kind: str, pos: list[int], a, b, u) -> torch.Tensor:
    """The target straight from the logits [batch, n, V]: one explicit loop over sequences and positions."""
    batch, n, _ = logits.shape
    out = torch.zeros(batch, dtype=torch.float64)
    for s in range(batch):
        if kind == "next_token":
            for p in range(n - 1):
                out[s] += logits[s, p, toks[s, p + 1]].double()
            continue
        for i, p in enumerate(pos):
            row = logits[s, p].double()  # Python indexing: p may be negative
            if kind in ("logit", "logit_diff"):
                ta = a if isinstance(a, int) else int(a[s] if a.ndim == 1 else a[s, i])
                out[s] += row[ta]
                if kind == "logit_diff":
                    tb = b if isinstance(b, int) else int(b[s] if b.ndim == 1 else b[s, i])
                    out[s] -= row[tb]
            else:
                w = u if u.ndim == 1 else (u[s] if u.ndim == 2 else u[s, i])
                out[s] += (row * w.double()).sum()
    return out


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    pos_type = draw(st.sampled_from(["standard", "rotary"]))
    batch = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 10**6))
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (batch, N), generator=gen)
    kind = draw(st.sampled_from(["logit", "logit_diff", "direction", "next_token"]))
    # distinct positions in any order, each given as p or p - N (negative)
    chosen = draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=4, unique=True))
    pos = [p - N if draw(st.booleans()) else p for p in chosen]
    shape = draw(st.sampled_from(["scalar", "batch", "per_pos"]))
    a = b = u = None

    def ids():
        if shape == "scalar":
            return int(torch.randint(0, V, (), generator=gen))
        size = (batch,) if shape == "batch" else (batch, len(pos))
        return torch.randint(0, V, size, generator=gen)

    if kind in ("logit", "logit_diff"):
        a = ids()
        b = ids() if kind == "logit_diff" else None
    elif kind == "direction":
        size = {"scalar": (V,), "batch": (batch, V), "per_pos": (batch, len(pos), V)}[shape]
        u = torch.randn(size, generator=gen, dtype=torch.float64).to(dtype)
    level = draw(st.sampled_from([1, 2, "lazy"]))
    single = draw(st.booleans()) and len(pos) == 1  # pos=-1 style (an int) instead of a list
    compute = draw(st.sampled_from([None, torch.float64]))  # decompose(dtype=...): float64 of a float32 model too
    return dtype, pos_type, toks, kind, (pos[0] if single else pos), a, b, u, level, compute


def make_target(kind, pos, a, b, u) -> Target:
    if kind == "logit":
        return Target.logit(a, pos=pos)
    if kind == "logit_diff":
        return Target.logit_diff(a, b, pos=pos)
    if kind == "direction":
        return Target.direction(u, pos=pos)
    return Target.next_token()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_target_totals_equal_the_real_logits(case):
    dtype, pos_type, toks, kind, pos, a, b, u, level, compute = case
    model = model_for(dtype, pos_type)
    with torch.no_grad():
        logits = model(toks)
    positions = [pos] if isinstance(pos, int) else pos
    want = expected(logits, toks, kind, positions, a, b, u)
    d = decompose(model, toks, level=level, target=make_target(kind, pos, a, b, u), budget=8, dtype=compute)
    tol = TOL[dtype]  # against the model's own logits: its dtype's rounding
    scale = want.abs().max().item() + 1.0
    assert (d.reference.double() - want).abs().max().item() <= tol * scale, (d.reference, want)
    # Σ of many float32 terms rounds like their absolute mass, not like the result (375 lazy terms: 1.4e-5)
    mass = max(scale, d.values.double().abs().sum(0).max().item())
    assert (d.total.double() - want).abs().max().item() <= tol * mass, (d.total, want)
    assert d.check().max_abs_err <= TOL[compute or dtype] * (scale if compute else mass)


@pytest.mark.parametrize("pos", [[3, 1], [-1, 0], [0, 4, 2]])
def test_per_position_ids_pair_with_positions_in_the_given_order(pos):
    """The reported bug: ids [batch, n_pos] were paired with the positions after sorting them."""
    model = model_for(torch.float64, "standard")
    toks = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(0))
    ids = torch.arange(3 * len(pos)).reshape(3, len(pos)) % V
    logits = model(toks).detach()
    want = torch.stack([sum(logits[s, p, ids[s, i]] for i, p in enumerate(pos)) for s in range(3)])
    d = decompose(model, toks, level=2, target=Target.logit(ids, pos=pos))
    torch.testing.assert_close(d.total, want, rtol=1e-10, atol=1e-10)
    u = torch.randn(3, len(pos), V, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want_u = torch.stack([sum(logits[s, p] @ u[s, i] for i, p in enumerate(pos)) for s in range(3)])
    torch.testing.assert_close(decompose(model, toks, level=1, target=Target.direction(u, pos=pos)).total, want_u,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch, pos", [(3, [0, 1, 2]), (3, -1), (2, [4, 1])])
def test_direction_per_sequence_weights_each_sequence_by_its_own_row(batch, pos):
    """The reported bug: u [batch, V] weighted sequence b at position p by u[p] (or raised a RuntimeError)."""
    model = model_for(torch.float64, "standard")
    toks = torch.randint(0, V, (batch, N), generator=torch.Generator().manual_seed(2))
    u = torch.randn(batch, V, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    logits = model(toks).detach()
    positions = [pos] if isinstance(pos, int) else pos
    want = torch.stack([sum(logits[s, p] @ u[s] for p in positions) for s in range(batch)])
    d = decompose(model, toks, level=2, target=Target.direction(u, pos=pos))
    torch.testing.assert_close(d.total, want, rtol=1e-10, atol=1e-10)
    assert d.check().max_rel_err < 1e-10


# ------------------------------------------------------------------ check() cannot be fooled


def test_check_catches_a_readout_that_pairs_after_sorting(monkeypatch):
    """Re-introduce the old bug in the readout only: check() must report it (its reference is independent)."""
    model = model_for(torch.float64, "standard")
    toks = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([[1, 7], [2, 9]])
    target = Target.logit(ids, pos=[3, 1])
    assert decompose(model, toks, level=2, target=target).check().max_rel_err < 1e-10
    real = target_module.target_order
    monkeypatch.setattr(target_module, "target_order", lambda t, n: sorted(real(t, n)))
    broken = decompose(model, toks, level=2, target=target).check()
    assert broken.max_rel_err > 1e-3, broken


def test_check_catches_a_readout_that_uses_the_wrong_direction_rows(monkeypatch):
    """A readout that reads u [batch, V] as per-position rows (the old behaviour when batch == n_pos)."""
    model = model_for(torch.float64, "standard")
    toks = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(5))
    u = torch.randn(2, V, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = Target.direction(u, pos=[0, 1])
    assert decompose(model, toks, level=1, target=target).check().max_rel_err < 1e-10
    real = target_module._direction
    monkeypatch.setattr(target_module, "_direction",
                        lambda u, B, P, D, like, space: real(u[None], B, P, D, like, space))  # [1, P=2, D]
    broken = decompose(model, toks, level=1, target=target).check()
    assert broken.max_rel_err > 1e-3, broken


def test_check_catches_a_wrong_unembedding_weight(monkeypatch):
    """Scale the readout's weights G by (1 + 1e-3): every term is off, and check() must see it."""
    model = model_for(torch.float64, "rotary")
    toks = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(7))
    real = target_module._onehot
    monkeypatch.setattr(target_module, "_onehot", lambda *a: real(*a) * (1 + 1e-3))
    broken = decompose(model, toks, level=2, target=Target.logit(3, pos=[2, -1])).check()
    assert broken.max_abs_err > 1e-6, broken
