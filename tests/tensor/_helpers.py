"""Helpers for the tensor-algebra tests: random bilinear weights and the spec's error measure."""

from dataclasses import dataclass

import pytest
import torch

from .conftest import TYPECHECK

# Marks tests that feed deliberately mis-shaped inputs to check the library's own messages.
own_errors = pytest.mark.skipif(TYPECHECK, reason="beartype rejects the input before the library does")

# Relative tolerances (max-abs error over max-abs value), §5: ~1e-12 in fp64, ~1e-4·√terms in fp32.
RTOL = {torch.float64: 1e-10, torch.float32: 2e-4}
DTYPES = [torch.float64, torch.float32]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|, the spec's error measure (robust to entries near zero)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_close(a, b, dtype=torch.float64, scale: float = 1.0) -> None:
    err = rel_err(a, b)
    tol = RTOL[dtype] * scale
    assert err < tol, f"relative error {err:.3e} above {tol:.1e}"


@dataclass
class Weights:
    W_l: torch.Tensor
    W_r: torch.Tensor
    W_out: torch.Tensor
    b_l: torch.Tensor
    b_r: torch.Tensor
    b_out: torch.Tensor

    @property
    def d(self) -> int:
        return self.W_l.shape[0]


def make_weights(d=7, m=11, d_out=None, dtype=torch.float64, seed=0, bias=True) -> Weights:
    g = torch.Generator().manual_seed(seed)
    d_out = d if d_out is None else d_out
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    z = (lambda *s: 0.5 * r(*s)) if bias else (lambda *s: torch.zeros(*s, dtype=dtype))  # noqa: E731
    return Weights(r(d, m) / d**0.5, r(d, m) / d**0.5, r(m, d_out) / m**0.5, z(m), z(m), z(d_out))


def reference_mlp(w: Weights, x: torch.Tensor) -> torch.Tensor:
    """The layer exactly as the model computes it."""
    return ((x @ w.W_l + w.b_l) * (x @ w.W_r + w.b_r)) @ w.W_out + w.b_out
