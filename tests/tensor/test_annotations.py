"""The jaxtyping shape annotations are right: public calls pass beartype, mis-shaped ones fail."""

import pytest
import torch
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from hooked_bilinear.tensor import BilinearTensor, TokenBilinear, unembed_direction
from hooked_bilinear.tensor._kernels import contract_coeffs, matvec_coeffs

from ._helpers import make_weights


def checked(fn):
    return jaxtyped(typechecker=beartype)(fn)


def test_public_calls_pass_the_type_checker():
    w = make_weights(d=5, m=6, d_out=4)
    bt = checked(BilinearTensor)(w.W_l, w.W_r, w.W_out, w.b_l, w.b_r, w.b_out)
    x, y = torch.randn(2, 3, 5, dtype=torch.float64)
    u = torch.randn(4, dtype=torch.float64)
    U = torch.randn(3, 4, dtype=torch.float64)
    assert checked(BilinearTensor.__call__)(bt, x, y).shape == (3, 4)
    assert checked(BilinearTensor.mlp)(bt, x).shape == (3, 4)
    assert checked(BilinearTensor.materialize)(bt, True).shape == (4, 5, 5)
    assert checked(BilinearTensor.interaction)(bt, U).shape == (3, 5, 5)
    assert checked(BilinearTensor.matvec)(bt, u, x).shape == (3, 5)
    assert checked(BilinearTensor.trace)(bt, U).shape == (3,)
    assert checked(BilinearTensor.gram)(bt).shape == (4, 4)
    assert checked(BilinearTensor.linear_part.fget)(bt).shape == (4, 5)
    assert checked(contract_coeffs)(w.W_l, w.W_r, torch.randn(2, 6, dtype=torch.float64)).shape == (2, 5, 5)
    W_E, W_U = torch.randn(9, 5, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    tb = TokenBilinear.from_weights(W_E, w.W_l, w.W_r, w.W_out, W_U)
    assert checked(TokenBilinear.pair_logits)(tb, 1, 2).shape == (9,)
    assert checked(TokenBilinear.bigram_diagonal)(tb).shape == (9, 9)
    assert checked(unembed_direction)(W_U, torch.tensor([1, 2])).shape == (2, 4)


def test_mis_shaped_call_fails_the_type_checker():
    w = make_weights(d=5, m=6)
    with pytest.raises(TypeCheckError):
        checked(matvec_coeffs)(w.W_l, w.W_r, torch.randn(6, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
