"""Top-k eigenpairs by |λ| of many symmetric operators at once: thick-restarted block Krylov.

Each operator is known only through a batched product Y ↦ Y Q ([n, b, d] rows in, rows out), so
the cost per step is GEMMs over all n operators together. The method is block Lanczos in its
Davidson form (Rayleigh-Ritz on a basis extended by the Ritz residuals, full reorthogonalisation,
thick restart that keeps the best Ritz vectors and their images without new products):

- both ends at once: the Ritz values are ranked by |θ|, so the largest positive and the most
  negative eigenvalues converge together (Q_u is indefinite; LOBPCG's definiteness is not assumed);
- repeated and ± paired eigenvalues: a block of b ≥ k random vectors spans b directions of every
  eigenspace, so an eigenvalue repeated up to k times in the top k is found with all its copies
  (single-vector Lanczos finds one copy per restart and can stop before the others);
- a pair is converged when its residual ‖Qv − θv‖ ≤ tol · max|θ|; since |θ − λ| ≤ ‖Qv − θv‖ for a
  symmetric Q, every value returned is within tol·max|λ| of an eigenvalue (usually far closer: the
  error decays with the residual squared).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from hooked_bilinear.tensor.eigen import sort_by_magnitude


def default_tol(dtype: torch.dtype) -> float:
    """Residual tolerance relative to max|θ|: 1e-4 in float32 and lower, 1e-10 in float64."""
    return 1e-10 if dtype == torch.float64 else 1e-4


def _orthonormal_block(W: Tensor, basis: Tensor | None, gen: torch.Generator) -> Tensor:
    """Rows of W [n, b, d] made orthonormal and orthogonal to ``basis`` [n, p, d] (twice, then QR).

    Rows that vanish after projection (an invariant subspace was reached, e.g. an exactly repeated
    eigenvalue whose copies the block already holds) are replaced by fresh random rows, so the
    block keeps its full rank as long as p + b ≤ d.
    """
    n, b, d = W.shape
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


def _rayleigh_ritz(V: Tensor, AV: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values θ [n, p] (sorted by |θ| descending) and coefficients S [n, p, p] of the basis
    V [n, p, d] with images AV = V Q: the Ritz rows are Sᵀ V and their images Sᵀ AV."""
    T = V @ AV.mT
    return sort_by_magnitude(*torch.linalg.eigh(0.5 * (T + T.mT)))


def block_krylov(
    apply: Callable[[Tensor, Tensor], Tensor],
    n: int,
    d: int,
    k: int,
    like: Tensor,
    block: int | None = None,
    max_basis: int | None = None,
    tol: float | None = None,
    max_iters: int = 1000,
    seed: int = 0,
    check_every: int = 2,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k eigenpairs by |λ| of n symmetric d×d operators, batched.

    Args:
        apply: ``apply(Y, idx)`` with Y [n', b, d] rows and idx [n'] the operators they belong to
            (a subset once some have converged), returns Y Q_idx [n', b, d].
        n: number of operators.
        d: their dimension.
        k: eigenpairs wanted per operator (1 ≤ k ≤ d).
        like: a tensor of the dtype and device to compute in.
        block: rows added per step; at least k (default k + 2), so every eigenvalue repeated up to
            k times keeps all its copies.
        max_basis: basis size that triggers a thick restart (default max(160, 6·block), ≤ d; at
            d 1024 a larger basis needs fewer products than frequent restarts).
        tol: residual tolerance relative to max|θ| (``default_tol``).
        max_iters: steps before giving up (the best Ritz pairs so far are returned).
        seed: start block seed (results are a deterministic function of the seed).
        check_every: blocks added between Rayleigh-Ritz checks (the p×p eigh of each check costs
            more than a product once the basis is a few hundred rows).

    Returns:
        (values [n, k], vectors [n, d, k], converged [n] bool), sorted by |λ| descending.
    """
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must be in [1, d={d}]")
    dtype, device = like.dtype, like.device
    tol = default_tol(dtype) if tol is None else tol
    b = min(d, max(k, block if block is not None else k + 2))
    p_max = min(d, max_basis if max_basis is not None else max(160, 6 * b))
    p_max = max(p_max, min(d, k + b))
    keep = min(p_max - b, max(k, p_max // 2)) if p_max < d else p_max
    gen = torch.Generator(device=device).manual_seed(seed)

    values = torch.zeros(n, k, dtype=dtype, device=device)
    vectors = torch.zeros(n, k, d, dtype=dtype, device=device)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    active = torch.arange(n, device=device)
    start = torch.randn(n, b, d, generator=gen, dtype=dtype, device=device)
    V = _orthonormal_block(start, None, gen)
    AV = apply(V, active)
    for _ in range(max_iters):
        theta, S = _rayleigh_ritz(V, AV)
        p = V.shape[1]
        w = min(p, max(k, b))  # Ritz pairs needed now: the top k (tested) and the b to extend with
        X, AX = S[:, :, :w].mT @ V, S[:, :, :w].mT @ AV
        R = AX - theta[:, :w, None] * X
        resid = R[:, :k].norm(dim=-1)
        top = theta[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
        done = (resid <= tol * top).all(dim=1) | (p >= d)
        values[active], vectors[active] = theta[:, :k], X[:, :k]
        converged[active[done]] = True
        if bool(done.all()):
            break
        live = ~done
        active, theta, S, R, V, AV = active[live], theta[live], S[live], R[live], V[live], AV[live]
        if p + b > p_max:  # thick restart: the best Ritz vectors and their images, no new products
            Sk = S[:, :, :keep]
            V, AV = Sk.mT @ V, Sk.mT @ AV
        W = _orthonormal_block(R[:, : min(b, d - V.shape[1])], V, gen)
        for step in range(check_every):  # plain block Lanczos steps between Rayleigh-Ritz checks
            AW = apply(W, active)
            V, AV = torch.cat([V, W], dim=1), torch.cat([AV, AW], dim=1)
            if step + 1 == check_every or V.shape[1] + b > p_max:
                break
            W = _orthonormal_block(AW, V, gen)
    return values, vectors.mT, converged
