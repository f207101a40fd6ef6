"""Eigendecompositions of interaction matrices: result types and the dense / Lanczos solvers.

For a symmetric interaction matrix Q_u = Σ_i λ_i v_i v_iᵀ (§1.5):  u·B(x,x) = xᵀQ_u x = Σ_i λ_i (v_i·x)².
Eigenpairs are kept sorted by |λ| descending, so "top-k" always means the k largest magnitudes.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.tensor._validate import check_input, check_tensor


def sort_by_magnitude(values: Tensor, vectors: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Sort eigenvalues (last dim) by |λ| descending; permute eigenvector columns to match."""
    order = values.abs().argsort(dim=-1, descending=True, stable=True)
    values = values.gather(-1, order)
    if vectors is not None:
        vectors = vectors.gather(-1, order.unsqueeze(-2).expand_as(vectors))
    return values, vectors


@dataclass(frozen=True)
class Eigen:
    """Eigenpairs of one interaction matrix Q, sorted by |λ| descending.

    Attributes:
        values: eigenvalues λ_i, [n] (n = d, or k for a top-k decomposition).
        vectors: orthonormal eigenvectors as columns v_i, [d, n].
        u: the output direction Q was built from (None if not applicable).
        complete: True if all d eigenpairs are present (then Σλ² = ‖Q‖_F²).
        frob_sq_fn: computes ‖Q‖_F² on demand (``frob_sq``); a top-k decomposition needs it for
            truncation errors, and it costs O(d·m·min(d, m)), so it is only run when asked.
        quad: exact x ↦ xᵀQx (matrix-free), used for reconstruction errors.

    Example:
        >>> eg = bt.eig(W_U[:, token])
        >>> eg.reconstruct(x, k=4)          # Σ_{i<4} λ_i (v_i·x)²
    """

    values: Float[Tensor, " n"]
    vectors: Float[Tensor, "d n"]
    u: Float[Tensor, " d_out"] | None = None
    complete: bool = True
    frob_sq_fn: Callable[[], Tensor] | None = field(default=None, repr=False, compare=False)
    quad: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.values.shape[0]

    @cached_property
    def frob_sq(self) -> Float[Tensor, ""] | None:
        """‖Q‖_F² (= Σλ² over all d eigenvalues), or None if unknown."""
        if self.complete:
            return self.values.square().sum()
        return self.frob_sq_fn() if self.frob_sq_fn is not None else None

    def activations(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch n"]:
        """Eigenvector activations v_i·x, i.e. ``x @ V``."""
        return check_input("x", x, self.vectors.shape[0], self.vectors, "d") @ self.vectors

    def reconstruct(self, x: Float[Tensor, "*batch d"], k: int | None = None) -> Float[Tensor, "*batch"]:
        """Rank-k approximation Σ_{i<k} λ_i (v_i·x)² of xᵀQx (k=None: all pairs held)."""
        a = self.activations(x)[..., :k]
        return (a.square() * self.values[:k]).sum(-1)

    def exact(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch"]:
        """xᵀQx, matrix-free when ``quad`` is known, else from a complete eigendecomposition."""
        if self.quad is not None:
            return self.quad(check_input("x", x, self.vectors.shape[0], self.vectors, "d"))
        if not self.complete:
            raise ValueError("this top-k Eigen has no exact quadratic form; pass complete pairs or quad")
        return self.reconstruct(x)

    def reconstruction_error(self, x: Float[Tensor, "*batch d"], k: int | None = None) -> Float[Tensor, "*batch"]:
        """xᵀQx − Σ_{i<k} λ_i (v_i·x)²: what the top-k eigenvectors miss on input x."""
        return self.exact(x) - self.reconstruct(x, k)

    def effective_rank(self) -> Float[Tensor, ""]:
        """(‖λ‖₁ / ‖λ‖₂)², the participation count used in [P] App. E (over the pairs held)."""
        return self.values.abs().sum().square() / self.values.square().sum()

    def truncation_error(self, k: int) -> Float[Tensor, ""]:
        """‖Q − Q_k‖_F² = Σ_{i≥k} λ_i² for the top-|λ| rank-k truncation Q_k."""
        if self.complete:
            return self.values[k:].square().sum()
        if self.frob_sq is None:
            raise ValueError("truncation_error of a top-k Eigen needs ‖Q‖_F² (frob_sq_fn)")
        if k > len(self):
            raise ValueError(f"k={k} exceeds the {len(self)} eigenpairs held")
        return (self.frob_sq - self.values[:k].square().sum()).clamp_min(0)

    def matrix(self, k: int | None = None) -> Float[Tensor, "d d"]:
        """Q_k = Σ_{i<k} λ_i v_i v_iᵀ (k=None: all pairs held)."""
        V = self.vectors[:, :k]
        return (V * self.values[:k]) @ V.T

    def to_input_space(self, W_E: Float[Tensor, "n_in d"]) -> Float[Tensor, "n_in n"]:
        """Eigenvectors viewed through an embedding: columns W_E v_i (token or pixel space).

        Exact (not orthogonal): W_E Q W_Eᵀ = Σ_i λ_i (W_E v_i)(W_E v_i)ᵀ when ``complete``.
        """
        check_tensor("W_E", W_E, 2)
        return check_input("W_E", W_E, self.vectors.shape[0], self.vectors, "d") @ self.vectors


@dataclass(frozen=True)
class Spectra:
    """Eigenvalues (and optionally eigenvectors) of many interaction matrices, each sorted by |λ|.

    Attributes:
        values: [k, d] eigenvalues, row c for output direction U[c].
        vectors: [k, d, d] eigenvectors as columns, or None if not requested.
        U: [k, d_out] the output directions.
    """

    values: Float[Tensor, "k d"]
    vectors: Float[Tensor, "k d d"] | None
    U: Float[Tensor, "k d_out"]

    def __len__(self) -> int:
        return self.values.shape[0]

    def effective_rank(self) -> Float[Tensor, " k"]:
        """(‖λ‖₁/‖λ‖₂)² per direction."""
        return self.values.abs().sum(-1).square() / self.values.square().sum(-1)

    def __getitem__(self, c: int) -> Eigen:
        if self.vectors is None:
            raise ValueError("Spectra was computed without vectors; call spectra(U, vectors=True)")
        return Eigen(self.values[c], self.vectors[c], self.U[c], complete=True)


def dense_eigh(Q: Float[Tensor, "d d"], k: int | None = None) -> tuple[Tensor, Tensor]:
    """All eigenpairs of a symmetric Q by ``torch.linalg.eigh``, top-k by |λ|."""
    values, vectors = sort_by_magnitude(*torch.linalg.eigh(Q))
    return values[:k], vectors[:, :k]


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    d: int,
    k: int,
    like: Tensor,
    tol: float | None = None,
    seed: int = 0,
    check_every: int = 8,
) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs by |λ| of a symmetric operator given only y ↦ Qy, in O(p·(matvec + d·p)).

    Lanczos with full reorthogonalisation; both ends of the spectrum converge together, so one run
    covers large positive and large negative λ. The Krylov dimension p grows until every wanted Ritz
    pair has residual ‖Qv − θv‖ ≤ tol·max|θ| (or p = d, where it is exact). On breakdown (an
    invariant subspace) it restarts from a fresh random vector orthogonal to the basis; that is how
    the copies of an exactly repeated eigenvalue are found (one per restart), so for strongly
    degenerate spectra ``dense_eigh`` is the safer choice.

    Returns:
        (values [k], vectors [d, k]) sorted by |λ| descending.
    """
    dtype, device = like.dtype, like.device
    k = min(k, d)
    tol = tol if tol is not None else (1e-5 if dtype == torch.float32 else 1e-10)
    gen = torch.Generator(device=device).manual_seed(seed)
    basis = torch.zeros(d, min(d, 2 * k + 32), dtype=dtype, device=device)  # grown on demand
    alpha = torch.zeros(d, dtype=dtype, device=device)
    beta = torch.zeros(d, dtype=dtype, device=device)

    def fresh(j: int) -> Tensor | None:
        for _ in range(3):
            q = torch.randn(d, generator=gen, dtype=dtype, device=device)
            for _ in range(2):
                q = q - basis[:, :j] @ (basis[:, :j].T @ q)
            n = q.norm()
            if n > 1e-8:
                return q / n
        return None

    q = fresh(0)
    scale = None
    for j in range(d):
        if j == basis.shape[1]:
            basis = torch.cat([basis, torch.zeros_like(basis[:, : min(j, d - j)])], dim=1)
        basis[:, j] = q
        w = matvec(q)
        alpha[j] = q @ w
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis[:, : j + 1] @ (basis[:, : j + 1].T @ w)
        b = w.norm()
        scale = max(scale or 0.0, float(alpha[j].abs()) + float(b))
        breakdown = float(b) <= 1e-10 * max(scale, 1e-300)
        m = j + 1
        if m == d:
            break
        if m >= k and not breakdown and (m - k) % check_every == 0:
            T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
            theta, S = torch.linalg.eigh(T)
            top = theta.abs().argsort(descending=True)[:k]
            resid = (b * S[-1, top]).abs()
            if bool((resid <= tol * theta.abs().max()).all()):
                break
        if breakdown:
            q = fresh(m)
            if q is None:
                break
            beta[j] = 0.0
        else:
            beta[j] = b
            q = w / b
    T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    theta, S = sort_by_magnitude(*torch.linalg.eigh(T))
    return theta[:k], basis[:, :m] @ S[:, :k]
