"""Top-k eigenpairs by |λ| of many symmetric operators at once: thick-restarted block Krylov.

Each operator is known only through a batched product Y ↦ Y Q ([n, b, d] rows in, rows out), so
the cost per step is GEMMs over all n operators together. The method is block Lanczos in its
Davidson form (Rayleigh-Ritz on a basis extended by the Ritz residuals, full reorthogonalisation,
thick restart that keeps the best Ritz vectors and their images without new products):

- both ends at once: the Ritz values are ranked by |θ|, so the largest positive and the most
  negative eigenvalues converge together (Q_u is indefinite; LOBPCG's definiteness is not assumed);
- repeated eigenvalues: a Krylov space grown from s independent start rows holds exactly
  min(s, multiplicity) copies of each eigenvalue. So when a converged cluster of equal top Ritz
  values is as large as the number of start rows so far, it may be missing copies: the solver then
  adds a block of fresh random start rows and goes on (``_krylov_steps.needs_more_starts``); it only
  stops once every cluster is smaller than its start count, i.e. holds all its copies. A small block
  (cheap: fewer products) is thus exact on degenerate and ± paired spectra;
- stopping on the eigenvalue error: a pair is converged when its error bound
  min(‖r‖, ‖r‖²/gap) (r = Qv − θv, gap to the nearest other Ritz value; |θ − λ| ≤ ‖r‖ holds for
  any symmetric Q, ‖r‖²/gap is the Kato-Temple bound with the gap estimated from the Ritz values)
  is ≤ tol · max|θ|, and, if ``vector_tol`` is given, its residual ≤ vector_tol · max|θ| (vectors
  accurate to ~‖r‖/gap). The eigenvalue error falls as the residual squared.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from hooked_bilinear.tensor._krylov_steps import (
    error_bounds,
    needs_more_starts,
    orthonormal_block,
    rayleigh_ritz,
)


def default_tol(dtype: torch.dtype) -> float:
    """Eigenvalue error tolerance relative to max|θ|: 1e-5 in float32 and lower, 1e-12 in float64."""
    return 1e-12 if dtype == torch.float64 else 1e-5


def default_vector_tol(dtype: torch.dtype) -> float:
    """Residual tolerance ‖Qv − θv‖ / max|θ| for returned vectors: 1e-4 in float32, 1e-10 in float64."""
    return 1e-10 if dtype == torch.float64 else 1e-4


def default_block(k: int) -> int:
    """Rows added per step: 2 for k ≥ 2 (near the product count of single-vector Lanczos, and exact on
    repeated eigenvalues through the start-count rule), 1 for k = 1."""
    return 1 if k == 1 else 2


def block_krylov(
    apply: Callable[[Tensor, Tensor], Tensor],
    n: int,
    d: int,
    k: int,
    like: Tensor,
    block: int | None = None,
    max_basis: int | None = None,
    tol: float | None = None,
    vector_tol: float | None = None,
    max_iters: int = 2000,
    seed: int = 0,
    check_every: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k eigenpairs by |λ| of n symmetric d×d operators, batched.

    Args:
        apply: ``apply(Y, idx)`` with Y [n', b, d] rows and idx [n'] the operators they belong to
            (a subset once some have converged), returns Y Q_idx [n', b, d].
        n: number of operators.
        d: their dimension.
        k: eigenpairs wanted per operator (1 ≤ k ≤ d).
        like: a tensor of the dtype and device to compute in.
        block: rows added per step (``default_block``). Any block size is exact on repeated
            eigenvalues (fresh start rows are added while a cluster could be missing copies); larger
            blocks need more products but fewer steps.
        max_basis: basis size that triggers a thick restart (default max(128, 8·block, 3k), ≤ d).
        tol: eigenvalue error tolerance relative to max|θ| (``default_tol``).
        vector_tol: also require every residual ‖Qv − θv‖ ≤ vector_tol · max|θ| (None: values only).
        max_iters: Rayleigh-Ritz checks before giving up (the best Ritz pairs so far are returned).
        seed: start block seed (results are a deterministic function of the seed).
        check_every: blocks added between Rayleigh-Ritz checks (default: about 8 rows' worth).

    Returns:
        (values [n, k], vectors [n, d, k], converged [n] bool), sorted by |λ| descending.
    """
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must be in [1, d={d}]")
    for name, t in (("tol", tol), ("vector_tol", vector_tol)):
        if t is not None and not t > 0:
            raise ValueError(f"{name}={t!r} must be a positive float")
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block={block!r} must be a positive int")
    dtype, device = like.dtype, like.device
    tol = default_tol(dtype) if tol is None else tol
    b = min(d, block if block is not None else default_block(k))
    steps = max(1, check_every if check_every is not None else -(-8 // b))
    p_max = min(d, max_basis if max_basis is not None else max(128, 8 * b, 3 * k))
    p_max = max(p_max, min(d, k + (steps + 1) * b))
    keep = min(p_max - steps * b, max(k + b, p_max // 2)) if p_max < d else p_max
    gen = torch.Generator(device=device).manual_seed(seed)

    values = torch.zeros(n, k, dtype=dtype, device=device)
    vectors = torch.zeros(n, k, d, dtype=dtype, device=device)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    active = torch.arange(n, device=device)
    starts = torch.full((n,), b, device=device)  # independent start rows each Krylov space grew from
    V = orthonormal_block(torch.randn(n, b, d, generator=gen, dtype=dtype, device=device), None, gen)
    AV = apply(V, active)
    while V.shape[1] < min(k + b, d):  # the first Rayleigh-Ritz needs at least k rows
        W = orthonormal_block(AV[:, -b:][:, : min(b, d - V.shape[1])], V, gen)
        V, AV = torch.cat([V, W], dim=1), torch.cat([AV, apply(W, active)], dim=1)
    for _ in range(max_iters):
        theta, S = rayleigh_ritz(V, AV)
        p = V.shape[1]
        X, AX = S[:, :, :k].mT @ V, S[:, :, :k].mT @ AV
        resid = (AX - theta[:, :k, None] * X).norm(dim=-1)
        top = theta[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
        ok = (error_bounds(theta, resid) <= tol * top).all(dim=1)
        if vector_tol is not None:
            ok &= (resid <= vector_tol * top).all(dim=1)
        more = needs_more_starts(theta, k, starts[active], 10 * tol * top) & ok & (p + b <= d)
        done = (ok & ~more) | (p >= d)
        values[active], vectors[active] = theta[:, :k], X[:, :k]
        converged[active[done]] = True
        if bool(done.all()):
            break
        live = ~done
        active, S, V, AV, more = active[live], S[live], V[live], AV[live], more[live]
        starts[active] += torch.where(more, b, 0)
        # The next block Lanczos block: the last images made orthogonal to the whole basis (every Ritz
        # residual lies in its span, before and after a thick restart), or fresh random rows where a
        # cluster may be missing copies.
        W = AV[:, -b:][:, : min(b, d - p)]
        if bool(more.any()):
            fresh = torch.randn(W.shape, generator=gen, dtype=dtype, device=device)
            W = torch.where(more[:, None, None], fresh, W)
        W = orthonormal_block(W, V, gen)
        if p + steps * b > p_max:  # thick restart: the best Ritz vectors and their images, no new products
            Sk = S[:, :, :keep]
            V, AV = Sk.mT @ V, Sk.mT @ AV
        for step in range(steps):  # plain block Lanczos steps between Rayleigh-Ritz checks
            AW = apply(W, active)
            V, AV = torch.cat([V, W], dim=1), torch.cat([AV, AW], dim=1)
            if step + 1 == steps or V.shape[1] + b > min(p_max, d):
                break
            W = orthonormal_block(AW, V, gen)
    return values, vectors.mT, converged
