"""Output directions u for interaction matrices Q_u, and input-space views of eigenvectors.

An output direction is any vector the MLP output is read by: an unembedding column (token logit),
a logit difference, an SAE encoder row, or the read-in of a later component (a later layer's W_l
column, a head's W_Q/W_K/W_V column). Each function returns plain tensors: u [d_out] or U [k, d_out].
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_bilinear.tensor._validate import check_tensor


def _check_index(name: str, idx: int | Tensor, n: int, what: str) -> None:
    vals = [idx] if isinstance(idx, int) else idx.reshape(-1).tolist()
    bad = [v for v in vals if not 0 <= v < n]
    if bad:
        raise IndexError(f"{name}={bad[0]} is out of range for {what}={n}")


def unembed_direction(
    W_U: Float[Tensor, "d_model d_vocab"], token: int | Int[Tensor, " k"]
) -> Float[Tensor, "*k d_model"]:
    """u = W_U[:, token]: the residual direction whose dot product is that token's logit (before b_U).

    A tensor of k tokens gives U [k, d_model], ready for ``BilinearTensor.spectra``.
    """
    check_tensor("W_U", W_U, 2)
    _check_index("token", token, W_U.shape[1], "d_vocab")
    return W_U[:, token].T if isinstance(token, Tensor) else W_U[:, token]


def logit_diff_direction(W_U: Float[Tensor, "d_model d_vocab"], a: int, b: int) -> Float[Tensor, " d_model"]:
    """u = W_U[:, a] − W_U[:, b], so u·MLP(x) is the MLP's contribution to logit(a) − logit(b)."""
    check_tensor("W_U", W_U, 2)
    _check_index("a", a, W_U.shape[1], "d_vocab")
    _check_index("b", b, W_U.shape[1], "d_vocab")
    return W_U[:, a] - W_U[:, b]


def read_in_direction(W_in: Float[Tensor, "d_model n"], index: int | Int[Tensor, " k"]) -> Float[Tensor, "*k d_model"]:
    """u = W_in[:, index]: the input direction of a later component, e.g. a later MLP's W_l column,
    an SAE encoder column, or a head's ``W_Q[h]`` column (pass the [d_model, d_head] slice).

    The interaction matrix of this u says which input pairs of this MLP drive that component.
    """
    check_tensor("W_in", W_in, 2)
    _check_index("index", index, W_in.shape[1], "its number of columns")
    return W_in[:, index].T if isinstance(index, Tensor) else W_in[:, index]


def direction(v: Float[Tensor, " d_out"], d_out: int, normalize: bool = False) -> Float[Tensor, " d_out"]:
    """An arbitrary output direction, checked to have ``d_out`` entries (optionally unit-normalised)."""
    check_tensor("v", v, 1)
    if v.shape[0] != d_out:
        raise ValueError(f"v has shape {tuple(v.shape)} but the tensor's output dim is d_out={d_out}")
    if normalize:
        n = v.norm()
        if n == 0:
            raise ValueError("v is the zero vector and cannot be normalised")
        v = v / n
    return v


def input_space(
    W_E: Float[Tensor, "n_in d"], vectors: Float[Tensor, "d *k"]
) -> Float[Tensor, "n_in *k"]:
    """Map residual-space vectors into token/pixel space: W_E v (columns of ``vectors`` for a matrix).

    For eigenvectors of Q this is exact: W_E Q W_Eᵀ = Σ_i λ_i (W_E v_i)(W_E v_i)ᵀ.
    """
    check_tensor("W_E", W_E, 2)
    if vectors.shape[0] != W_E.shape[1]:
        raise ValueError(f"vectors has shape {tuple(vectors.shape)} but its dim 0 must be d={W_E.shape[1]} of W_E")
    return W_E @ vectors


def stack_directions(*us: Float[Tensor, " d_out"]) -> Float[Tensor, "k d_out"]:
    """Stack several output directions into U [k, d_out] for ``spectra``."""
    if not us:
        raise ValueError("stack_directions needs at least one direction")
    return torch.stack(us)
