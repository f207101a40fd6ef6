"""The precision claims: a float64 reference pass when float64 is asked, and an error metric that does not
divide by a near-zero reference."""

from __future__ import annotations

import copy

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.circuits.decomposition import PathDecomposition

from ._models import make_model, tokens


@pytest.mark.parametrize("pos", ["standard", "rotary"])
@pytest.mark.parametrize("level", [1, 2, "full"])
def test_float64_of_a_float32_model_is_float64_exact(pos, level):
    """decompose(dtype=float64) on a float32 model: the reference is a float64 pass of the same weights."""
    model = make_model(2, "LN", pos, dtype=torch.float32)
    toks = tokens(batch=3)
    target = Target.logit_diff(2, 5, pos=[-1, 1])
    d = decompose(model, toks, level=level, target=target, dtype=torch.float64)
    assert d.values.dtype == torch.float64 and d.reference.dtype == torch.float64
    c = d.check()
    assert c.max_rel_err <= 1e-12 and c.max_mass_rel_err <= 1e-13, c
    assert "float64 pass of the float32 model" in c.what
    exact = copy.deepcopy(model).double()(toks)  # the expected reference, written here
    want = (exact[:, -1, 2] - exact[:, -1, 5]) + (exact[:, 1, 2] - exact[:, 1, 5])
    torch.testing.assert_close(d.reference, want, rtol=1e-13, atol=1e-13)
    own = model(toks).double()  # the float32 model's own logits are within its rounding of it
    torch.testing.assert_close(want, (own[:, -1, 2] - own[:, -1, 5]) + (own[:, 1, 2] - own[:, 1, 5]),
                               rtol=1e-5, atol=1e-5)
    assert model.cfg.dtype == torch.float32 and model.W_E.dtype == torch.float32  # untouched


def test_float32_decomposition_of_a_float32_model_keeps_float32_reference():
    model = make_model(2, "RMS", dtype=torch.float32)
    toks = tokens()
    d = decompose(model, toks, level=2, target=3)
    torch.testing.assert_close(d.reference, model(toks)[:, -1, 3].detach())
    assert "pass of the" not in d.check().what


def test_mass_relative_error_is_the_error_over_the_terms_absolute_sum():
    """Hand-made terms: max_b |Σ_k v_kb − ref_b| / Σ_k |v_kb| next to max|Σ − ref| / max|ref|."""
    values = torch.tensor([[1.0, 10.0, 0.0], [2.0, -10.0, 0.0], [-3.0, 1e-3, 0.0]], dtype=torch.float64)
    reference = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    d = PathDecomposition([None] * 3, values, torch.zeros(3), reference, level=1, positions=[0], description="x")
    c = d.check()
    # sequence 0: |0 - 0.5| / 6 = 1/12; sequence 1: |1e-3 - 0| / 20.001; sequence 2: no mass, no error
    assert c.max_abs_err == pytest.approx(0.5) and c.max_rel_err == pytest.approx(1.0)
    assert c.max_mass_rel_err == pytest.approx(0.5 / 6)
    assert "max err / terms' abs mass 8.33e-02" in str(c)


def test_near_tied_logit_difference_is_small_relative_to_the_terms_mass():
    """A logit difference that is ~0: max_rel_err divides by ~0; the mass-relative error stays at float32 rounding."""
    model = make_model(2, "LN", dtype=torch.float32)
    toks = tokens(batch=1, n=6)
    logits = model(toks)[0, -1].detach()
    diffs = (logits[:, None] - logits[None, :]).abs() + torch.eye(11) * 1e9
    a, b = divmod(int(diffs.argmin()), 11)  # the closest pair of logits
    d = decompose(model, toks, level="full", target=Target.logit_diff(a, b))
    c = d.check()
    assert abs(float(d.reference)) < 0.05 * float(d.values.abs().sum())  # the terms really cancel
    assert c.max_mass_rel_err <= 1e-5, c
    assert c.max_mass_rel_err <= c.max_rel_err  # never the larger of the two here


def test_assert_ok_checks_both_metrics():
    model = make_model(1, "LN")
    c = decompose(model, tokens(), level=2, target=1).check()
    assert c.assert_ok(1e-10, mass_rtol=1e-10) is c
    with pytest.raises(AssertionError, match="mass_rtol"):
        c.assert_ok(1.0, mass_rtol=0.0 if c.max_mass_rel_err > 0 else -1.0)
