"""Eigendecompositions of interaction matrices: result types and the dense solver (block: block_krylov.py).

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
        values: [n, k] eigenvalues, row c for output direction U[c] (k = d unless ``top`` was given).
        vectors: [n, d, k] eigenvectors as columns, or None if not requested.
        U: [n, d_out] the output directions.
        converged: [n] bool, False where the block solver stopped at its iteration limit before
            every residual met its tolerance (always True for the dense method); None if unknown.
    """

    values: Float[Tensor, "n k"]
    vectors: Float[Tensor, "n d k"] | None
    U: Float[Tensor, "n d_out"]
    converged: Tensor | None = None

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def complete(self) -> bool:
        """True if every eigenvalue is held (k = d), so Σλ² = ‖Q_u‖_F²."""
        return self.vectors is None or self.values.shape[1] == self.vectors.shape[1]

    def effective_rank(self) -> Float[Tensor, " n"]:
        """(‖λ‖₁/‖λ‖₂)² per direction (over the eigenvalues held)."""
        return self.values.abs().sum(-1).square() / self.values.square().sum(-1)

    def __getitem__(self, c: int) -> Eigen:
        if self.vectors is None:
            raise ValueError("Spectra was computed without vectors; call spectra(U, vectors=True)")
        return Eigen(self.values[c], self.vectors[c], self.U[c], complete=self.complete)


def dense_eigh(Q: Float[Tensor, "*n d d"], k: int | None = None) -> tuple[Tensor, Tensor]:
    """All eigenpairs of a symmetric Q (or a batch) by ``torch.linalg.eigh``, top-k by |λ|."""
    values, vectors = sort_by_magnitude(*torch.linalg.eigh(Q))
    return values[..., :k], vectors[..., :k]
