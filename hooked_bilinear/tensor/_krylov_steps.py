"""The steps of the batched block Krylov solver (``block_krylov``): orthonormal blocks, Rayleigh-Ritz,
error bounds of Ritz values, and the start-count rule that keeps every copy of a repeated eigenvalue.

Every function works on n operators at once: rows are [n, b, d], Ritz values [n, p].
"""

import torch
from torch import Tensor

from hooked_bilinear.tensor.eigen import sort_by_magnitude


def orthonormal_block(W: Tensor, basis: Tensor | None, gen: torch.Generator) -> Tensor:
    """Rows of W [n, b, d] made orthonormal and orthogonal to ``basis`` [n, p, d] (twice, then QR).

    Rows that vanish after projection (an invariant subspace was reached, e.g. an exactly repeated
    eigenvalue whose copies the block already holds) are replaced by fresh random rows, so the
    block keeps its full rank as long as p + b ≤ d.
    """
    scale = W.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    for attempt in range(3):
        for _ in range(2):
            if basis is not None and basis.shape[1]:
                W = W - (W @ basis.mT) @ basis
        Q, Rf = torch.linalg.qr(W.mT)  # [n, d, b]: Householder, stable
        diag = Rf.diagonal(dim1=-2, dim2=-1).abs()  # [n, b]
        weak = diag <= 1e-6 * scale[..., 0]
        if not bool(weak.any()) or attempt == 2:
            W = Q.mT
            break
        fresh = torch.randn(W.shape, generator=gen, dtype=W.dtype, device=W.device)
        W = torch.where(weak[..., None], fresh * scale, W)
    if basis is not None and basis.shape[1]:  # one more pass: QR of a projected block drifts by ~eps
        W = W - (W @ basis.mT) @ basis
        W = torch.linalg.qr(W.mT)[0].mT
    return W


def rayleigh_ritz(V: Tensor, AV: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values θ [n, p] (sorted by |θ| descending) and coefficients S [n, p, p] of the basis
    V [n, p, d] with images AV = V Q: the Ritz rows are Sᵀ V and their images Sᵀ AV."""
    T = V @ AV.mT
    return sort_by_magnitude(*torch.linalg.eigh(0.5 * (T + T.mT)))


def error_bounds(theta: Tensor, resid: Tensor) -> Tensor:
    """Error bound of each of the first k Ritz values θ [n, p] with residual norms ``resid`` [n, k].

    min(‖r‖, ‖r‖²/gap): ‖r‖ bounds |θ − λ| for some eigenvalue λ of any symmetric Q; ‖r‖²/gap is the
    Kato-Temple bound, with the gap to the rest of the spectrum estimated by the distance to the
    nearest other Ritz value (copies of a repeated eigenvalue give gap ≈ 0, hence the ‖r‖ bound).
    """
    k = resid.shape[1]
    gap = (theta[:, :k, None] - theta[:, None, :]).abs()
    gap[:, torch.arange(k), torch.arange(k)] = torch.inf
    gap = gap.amin(dim=-1) if theta.shape[1] > 1 else torch.full_like(resid, torch.inf)
    return torch.minimum(resid, resid.square() / gap.clamp_min(torch.finfo(resid.dtype).tiny))


def needs_more_starts(theta: Tensor, k: int, starts: Tensor, close: Tensor) -> Tensor:
    """[n] bool: a cluster of equal top Ritz values may be missing copies that belong in the top k.

    A Krylov space grown from s independent start rows holds min(s, m) copies of an eigenvalue of
    multiplicity m (its component in the eigenspace is spanned by the starts' projections). So a
    cluster of c ≥ s Ritz values within ``close`` [n, 1] of θ_i may be incomplete; a missing copy
    changes the top-k values only if |θ_i| exceeds the k-th |θ| by more than ``close``.
    """
    top = theta[:, :k]
    count = ((top[:, :, None] - theta[:, None, :]).abs() <= close[:, :, None]).sum(dim=-1)  # [n, k]
    inside = top.abs() > top[:, -1:].abs() + close
    return ((count >= starts[:, None]) & inside).any(dim=1)
