"""Bilinear tensor algebra: the third-order tensor of a bilinear MLP, kept factored (spec/math.md §1, §4).

Example:
    >>> from hooked_bilinear.tensor import BilinearTensor, unembed_direction
    >>> bt = BilinearTensor.from_layer(model.blocks[0].mlp)
    >>> eg = bt.eig(unembed_direction(model.W_U, token))   # u·MLP(x) = Σ λ_i (v_i·x)² (+ bias parts)
    >>> spec = bt.spectra(model.W_U.T)                      # all token directions, batched
"""

from hooked_bilinear.tensor.bilinear_tensor import BilinearTensor
from hooked_bilinear.tensor.directions import (
    direction,
    input_space,
    logit_diff_direction,
    read_in_direction,
    stack_directions,
    unembed_direction,
)
from hooked_bilinear.tensor.eigen import Eigen, Spectra
from hooked_bilinear.tensor.errors import MaterializeTooLargeError, NotBilinearError
from hooked_bilinear.tensor.hosvd import HOSVD, hosvd
from hooked_bilinear.tensor.token_space import TokenBilinear, TokenEigen

__all__ = [
    "HOSVD",
    "BilinearTensor",
    "Eigen",
    "MaterializeTooLargeError",
    "NotBilinearError",
    "Spectra",
    "TokenBilinear",
    "TokenEigen",
    "direction",
    "hosvd",
    "input_space",
    "logit_diff_direction",
    "read_in_direction",
    "stack_directions",
    "unembed_direction",
]
