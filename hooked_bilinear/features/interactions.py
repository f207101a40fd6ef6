"""Weight-only feature circuits of a bilinear layer: Q_u in an input dictionary's decoder basis.

For an output direction u (an output feature's encoder column, a decoder row, a logit direction)
and input features with decoder rows D [n, d] (feature f writes D[f] into the MLP's input):

    M_u = D Q_u Dᵀ   [n, n],     u · B(x̃, x̃) = aᵀ M_u a   for x̃ = a D             (math.md §1.4)

so M_u[f, g] is how much input features f and g, active together, drive u (Pearce et al. §5). M_u
has rank ≤ d, and its eigendecomposition needs only d×d work: with G = DᵀD = R², R symmetric,
S = R Q_u R = W Λ Wᵀ gives M_u = V Λ Vᵀ with V = D R⁻¹ W orthonormal [n, d] (exact; verified in
the tests against `eigh` of the dense M_u). Nothing here forms n × n unless `dense_feature_matrix`
is called. `include_bias=True` appends the decoder bias b_dec as an always-on feature (activation 1),
so x̃ is the dictionary's whole reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.errors import InputError

Basis = Union[Tensor, "object"]  # a decoder [n, d] or an SAE


def decoder_basis(inputs, include_bias: bool = False) -> Float[Tensor, "n d"]:
    """The decoder rows of an SAE (or a given [n, d] tensor), optionally with b_dec as a last row."""
    from hooked_bilinear.features.sae import SAE

    if isinstance(inputs, SAE):
        D = inputs.W_dec.detach()
        if include_bias:
            D = torch.cat([D, inputs.b_dec.detach()[None]])
        return D
    if not isinstance(inputs, Tensor) or inputs.ndim != 2:
        raise InputError(f"input features must be an SAE or a decoder [n, d], got "
                         f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}")
    return inputs


def _check(B, D: Tensor, u: Tensor) -> None:
    if D.shape[-1] != B.d_in:
        raise InputError(f"decoder rows have width {D.shape[-1]} but the layer reads d_in={B.d_in}: the input "
                         "dictionary must sit on the MLP's input (e.g. blocks.l.ln2.hook_normalized)")
    if u.shape[-1] != B.d_out:
        raise InputError(f"output direction has width {u.shape[-1]} but the layer writes d_out={B.d_out}")


@dataclass
class FeatureEigen:
    """M_u = V diag(values) Vᵀ in the feature basis, sorted by |λ| (the nonzero part, rank ≤ d).

    Attributes:
        values: [r] eigenvalues. vectors: [n, r] orthonormal columns over the input features.
        readout: [d, r] with `v_i · a = (a D) @ readout[:, i]`: evaluate on reconstructions, not on a.
    """

    values: Tensor
    vectors: Tensor
    readout: Tensor

    def activations(self, x: Float[Tensor, "*b d"]) -> Float[Tensor, "*b r"]:
        """`v_i · a` for reconstructions x̃ = a D (or any input-space x)."""
        return x @ self.readout

    def approx(self, x: Float[Tensor, "*b d"], rank: int) -> Float[Tensor, "*b"]:
        """`Σ_{i<rank} λ_i (v_i·a)²`: the rank-`rank` approximation of u·B(x̃, x̃)."""
        p = self.activations(x)[..., :rank]
        return (self.values[:rank] * p * p).sum(-1)


def gram_roots(D: Float[Tensor, "n d"], rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """R = (DᵀD)^½ and its pseudo-inverse R⁺ [d, d] (directions below rtol·max are dropped)."""
    s, U = torch.linalg.eigh(D.T @ D)
    keep = s > rtol * s.max()
    root = torch.where(keep, s.clamp_min(0).sqrt(), torch.zeros_like(s))
    inv = torch.where(keep, 1 / root.clamp_min(1e-30), torch.zeros_like(s))
    return (U * root) @ U.T, (U * inv) @ U.T


def feature_eig(B, inputs, u: Float[Tensor, "*k d_out"], include_bias: bool = False,
                rank: Optional[int] = None) -> Union[FeatureEigen, list[FeatureEigen]]:
    """Eigendecomposition of M_u = D Q_u Dᵀ through d×d matrices only (batched over rows of u).

    Args:
        B: the layer's `BilinearTensor` (`model.bilinear(l)`).
        inputs: the input dictionary (an SAE on the MLP input) or its decoder [n, d].
        u: one output direction [d_out] or a batch [k, d_out].
        include_bias: add b_dec as an always-on feature.
        rank: keep the top-|λ| `rank` pairs (default: all d).
    """
    D = decoder_basis(inputs, include_bias).to(B.dtype)
    _check(B, D, u)
    R, Rinv = gram_roots(D)
    Q = B.interaction(u.to(B.dtype))
    lam, W = torch.linalg.eigh(R @ Q @ R)
    order = lam.abs().argsort(dim=-1, descending=True)[..., :rank]
    lam = lam.gather(-1, order)
    W = W.gather(-1, order.unsqueeze(-2).expand(*W.shape[:-1], order.shape[-1]))
    readout = Rinv @ W
    if u.ndim == 1:
        return FeatureEigen(lam, D @ readout, readout)
    return [FeatureEigen(lam[i], D @ readout[i], readout[i]) for i in range(u.shape[0])]


def feature_importance(B, inputs, u: Float[Tensor, " d_out"], include_bias: bool = False) -> Float[Tensor, " n"]:
    """Row norms ‖M_u[f]‖ for every input feature, from d×d products only (`d_f Q G Q d_fᵀ`)."""
    D = decoder_basis(inputs, include_bias).to(B.dtype)
    _check(B, D, u)
    Q = B.interaction(u.to(B.dtype))
    P = Q @ (D.T @ D) @ Q
    return torch.einsum("fi,ij,fj->f", D, P, D).clamp_min(0).sqrt()


def feature_interactions(B, inputs, u: Float[Tensor, " d_out"], top_k: int = 32,
                         include_bias: bool = False) -> tuple[Tensor, Tensor]:
    """M_u restricted to the `top_k` input features with the largest rows: `(indices [k], M [k, k])`.

    Example:
        >>> idx, M = feature_interactions(model.bilinear(1), sae_in, sae_out.W_enc[:, 7], top_k=16)  # doctest: +SKIP
    """
    D = decoder_basis(inputs, include_bias).to(B.dtype)
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    idx = feature_importance(B, D, u).topk(min(top_k, D.shape[0])).indices
    Dk = D[idx]
    return idx, Dk @ B.interaction(u.to(B.dtype)) @ Dk.T


def dense_feature_matrix(B, inputs, u: Float[Tensor, " d_out"], include_bias: bool = False,
                         max_bytes: int = 2**30) -> Float[Tensor, "n n"]:
    """The whole n × n M_u (asked for explicitly; refused above `max_bytes`)."""
    D = decoder_basis(inputs, include_bias).to(B.dtype)
    _check(B, D, u)
    need = D.shape[0] ** 2 * D.element_size()
    if need > max_bytes:
        raise InputError(f"the dense {D.shape[0]}×{D.shape[0]} feature matrix needs {need:,} bytes > max_bytes="
                         f"{max_bytes:,}; use feature_interactions(top_k=...) or feature_eig")
    return D @ B.interaction(u.to(B.dtype)) @ D.T


def top_pairs(B, inputs, u: Float[Tensor, " d_out"], n: int = 10, include_bias: bool = False,
              chunk_size: int = 256):
    """The `n` unordered input-feature pairs with the largest |interaction| for u, as a DataFrame.

    A pair (f, g), f < g, contributes `2 M_u[f,g] a_f a_g`; the diagonal `M_u[f,f] a_f²`. Rows of M_u
    are formed `chunk_size` at a time with a running top-n (memory O(chunk · n_features)).

    Returns:
        DataFrame with columns `feature_i`, `feature_j`, `interaction` (2M or M on the diagonal).
    """
    import pandas as pd

    D = decoder_basis(inputs, include_bias).to(B.dtype)
    _check(B, D, u)
    QD = B.interaction(u.to(B.dtype)) @ D.T  # [d, n]
    nf = D.shape[0]
    best_v = torch.empty(0, dtype=D.dtype)
    best_i = torch.empty(0, dtype=torch.long)
    for start in range(0, nf, chunk_size):
        rows = D[start:start + chunk_size] @ QD  # [c, n]
        r = torch.arange(start, start + rows.shape[0])[:, None]
        c = torch.arange(nf)[None]
        vals = torch.where(c > r, 2 * rows, torch.where(c == r, rows, torch.zeros_like(rows)))
        vals = vals.masked_fill(c < r, 0).flatten()
        flat = (r * nf + c).flatten()
        top = vals.abs().topk(min(n, vals.numel())).indices
        best_v, best_i = torch.cat([best_v, vals[top]]), torch.cat([best_i, flat[top]])
        keep = best_v.abs().topk(min(n, best_v.numel())).indices
        best_v, best_i = best_v[keep], best_i[keep]
    return pd.DataFrame({"feature_i": (best_i // nf).tolist(), "feature_j": (best_i % nf).tolist(),
                         "interaction": best_v.tolist()})
