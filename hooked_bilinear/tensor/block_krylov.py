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
  adds a block of fresh random start rows, grows them for as many rows as the first convergence took
  (so their copies converge too), and stops only once every cluster is smaller than its start count,
  i.e. holds all its copies (``_krylov_steps.needs_more_starts``). A small block (fewer products) is
  thus exact on degenerate and ± paired spectra;
- stopping on the eigenvalue error: a pair is converged when its error bound
  min(‖r‖, ‖r‖²/gap) (r = Qv − θv, gap to the nearest other Ritz value; |θ − λ| ≤ ‖r‖ holds for
  any symmetric Q, ‖r‖²/gap is the Kato-Temple bound with the gap estimated from the Ritz values)
  is ≤ tol · max|θ|, and, if ``vector_tol`` is given, its residual ≤ vector_tol · max|θ| (vectors
  accurate to ~‖r‖/gap). The eigenvalue error falls as the residual squared. Rayleigh-Ritz runs on
  eigenvalues only (``eigvalsh``, ~10x cheaper than ``eigh`` at p ~ 128) until the top-k Ritz values
  stop moving by more than tol·max|θ|; only then are vectors and residuals formed and tested.
"""

from collections.abc import Callable

import torch
from torch import Tensor

# Bumped whenever the solver's results change numerically (stopping rule, blocks, restarts): a sharded
# spectra job records it, so a folder started with another version is not resumed into mixed results.
SOLVER_VERSION = "block-krylov/2: eigenvalue-bound stopping, start-count rule"

from hooked_bilinear.tensor._krylov_steps import error_bounds, needs_more_starts, orthonormal_block
from hooked_bilinear.tensor.eigen import sort_by_magnitude


def default_tol(dtype: torch.dtype) -> float:
    """Eigenvalue error tolerance relative to max|θ|: 1e-5 in float32 and lower, 1e-12 in float64."""
    return 1e-12 if dtype == torch.float64 else 1e-5


def default_vector_tol(dtype: torch.dtype) -> float:
    """Residual tolerance ‖Qv − θv‖ / max|θ| for returned vectors: 1e-4 in float32, 1e-10 in float64."""
    return 1e-10 if dtype == torch.float64 else 1e-4


def default_block(k: int, n: int = 1 << 20) -> int:
    """Rows added per step for n operators: 2 once the n·2 rows of a product fill a GEMM (n ≥ 64; measured
    at d 1024: 1.3x the products of an ideal block-2 Lanczos, vs 2.3x for block 10), else up to k + 2 so
    that few operators (``eig``) still multiply ~128 rows at a time. Two starts tell a single eigenvalue
    from a repeated one, so a spectrum without repeats never pays for fresh starts."""
    return max(2, min(k + 2, -(-128 // max(n, 1))))


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
        block: rows added per step (``default_block(k, n)``). Any block size is exact on repeated
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
    b = min(d, block if block is not None else default_block(k, n))
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
    # rows multiplied so far, and the count before which no answer is accepted: after fresh start rows,
    # as many rows as the first convergence took, so that copies in the new rows converge as well
    grown = torch.zeros(n, dtype=torch.long, device=device)
    gate = torch.zeros(n, dtype=torch.long, device=device)
    first = torch.zeros(n, dtype=torch.long, device=device)
    # after a full check that failed, skip that many screens before the next (an eigh costs ~16 products)
    wait = torch.zeros(n, dtype=torch.long, device=device)
    fails = torch.zeros(n, dtype=torch.long, device=device)
    # the basis and its images live in preallocated [n, p_max, d] buffers, filled up to row p
    V = torch.empty(n, p_max, d, dtype=dtype, device=device)
    AV = torch.empty_like(V)
    V[:, :b] = orthonormal_block(torch.randn(n, b, d, generator=gen, dtype=dtype, device=device), None, gen)
    AV[:, :b] = apply(V[:, :b], active)
    p = b
    grown += b
    while p < min(k + b, d):  # the first Rayleigh-Ritz needs at least k rows
        W = orthonormal_block(AV[:, p - b : p][:, : min(b, d - p)], V[:, :p], gen)
        V[:, p : p + W.shape[1]], AV[:, p : p + W.shape[1]] = W, apply(W, active)
        p += W.shape[1]
        grown += W.shape[1]
    last = torch.full((n, k), torch.inf, dtype=dtype, device=device)  # top-k Ritz values at the last check
    for _ in range(max_iters):
        restart = p + steps * b > p_max and p_max < d
        T = V[:, :p] @ AV[:, :p].mT
        T = 0.5 * (T + T.mT)
        # Cheap screen: eigenvalues only (an eigh with vectors costs ~10x more at p ~ 128); the full
        # check, with residuals, runs only where the top-k Ritz values stopped moving (or to restart).
        theta = sort_by_magnitude(torch.linalg.eigvalsh(T))[0]
        top = theta[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
        settled = ((theta[:, :k] - last).abs() <= tol * top).all(dim=1) | (p >= d)
        last = theta[:, :k]
        done = torch.zeros_like(settled)
        more = torch.zeros_like(settled)
        due = (settled & (wait[active] <= 0)) | (p >= d)
        wait[active] -= settled.long()
        full = torch.arange(len(active), device=device) if restart else due.nonzero()[:, 0]
        if len(full):
            th, S = sort_by_magnitude(*torch.linalg.eigh(T[full]))
            X, AX = S[:, :, :k].mT @ V[full, :p], S[:, :, :k].mT @ AV[full, :p]
            resid = (AX - th[:, :k, None] * X).norm(dim=-1)
            tp = top[full]
            ok = (error_bounds(th, resid) <= tol * tp).all(dim=1)
            if vector_tol is not None:
                ok &= (resid <= vector_tol * tp).all(dim=1)
            mo = needs_more_starts(th, k, starts[active[full]], 10 * tol * tp) & ok & (p + b <= d)
            dn = (ok & ~mo & (grown[active[full]] >= gate[active[full]])) | (p >= d)
            done[full], more[full] = dn, mo
            failed = active[full[~dn & ~mo]]
            fails[failed] += 1
            wait[failed] = fails[failed]
            values[active[full]], vectors[active[full]] = th[:, :k], X
            converged[active[full[dn]]] = True
        if bool(done.all()):
            break
        live = ~done
        if not bool(live.all()):
            active, V, AV, more, last = active[live], V[live], AV[live], more[live], last[live]
            S = S[live[full]] if restart else None
        starts[active] += torch.where(more, b, 0)
        if bool(more.any()):
            first[active[more]] = torch.where(first[active[more]] > 0, first[active[more]], grown[active[more]])
            gate[active[more]] = grown[active[more]] + first[active[more]]
        # The next block Lanczos block: the last images made orthogonal to the whole basis (every Ritz
        # residual lies in its span, before and after a thick restart), or fresh random rows where a
        # cluster may be missing copies.
        W = AV[:, p - b : p][:, : min(b, d - p)]
        if bool(more.any()):
            fresh = torch.randn(W.shape, generator=gen, dtype=dtype, device=device)
            W = torch.where(more[:, None, None], fresh, W)
            last[more] = torch.inf
        W = orthonormal_block(W, V[:, :p], gen)
        if restart:  # thick restart: the best Ritz vectors and their images, no new products
            Sk = S[:, :, :keep]
            V[:, :keep], AV[:, :keep] = Sk.mT @ V[:, :p], Sk.mT @ AV[:, :p]
            p = keep
        for step in range(steps):  # plain block Lanczos steps between Rayleigh-Ritz checks
            r = W.shape[1]
            V[:, p : p + r], AV[:, p : p + r] = W, apply(W, active)
            p += r
            grown[active] += r
            if step + 1 == steps or p + b > min(p_max, d):
                break
            W = orthonormal_block(AV[:, p - r : p], V[:, :p], gen)
    else:  # out of iterations: the best Ritz pairs of the final basis (``converged`` stays False)
        T = V[:, :p] @ AV[:, :p].mT
        th, S = sort_by_magnitude(*torch.linalg.eigh(0.5 * (T + T.mT)))
        values[active], vectors[active] = th[:, :k], S[:, :, :k].mT @ V[:, :p]
    return values, vectors.mT, converged
