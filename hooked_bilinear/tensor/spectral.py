"""Interaction matrices of output directions and their spectra (§1.4-1.5), as BilinearTensor methods.

    Q_u = Σ_o u_o B_sym[o] = ½(W_l D_u W_rᵀ + W_r D_u W_lᵀ),   D_u = diag(W_out u)
    u·(MLP(x) − b_out) = xᵀQ_u x  (bias-free part; use ``augmented=True`` for the bias parts)
"""

from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.tensor._kernels import (
    _needs_grad,
    block_apply_coeffs,
    contract_coeffs,
    factor_gram,
    matvec_coeffs,
)
from hooked_bilinear.tensor._validate import auto_chunk, check_input, size_guard
from hooked_bilinear.tensor.block_krylov import block_krylov, default_vector_tol
from hooked_bilinear.tensor.eigen import Eigen, Spectra, dense_eigh, sort_by_magnitude

if TYPE_CHECKING:
    from hooked_bilinear.tensor.bilinear_tensor import BilinearTensor
    from hooked_bilinear.tensor.hosvd import HOSVD

# "auto" switches to the block solver only where dense eigh (~d³) clearly loses to k·d·m products.
# Both methods return the right spectrum (repeated and ± paired eigenvalues included), so this
# threshold is only about speed.
_BLOCK_MIN_D = 1024
_METHODS = ("auto", "dense", "block", "lanczos")


class SpectralMethods:
    """Mixin of BilinearTensor: everything that contracts B with output directions u."""

    W_l: Tensor
    W_r: Tensor
    W_out: Tensor | None

    def _factors(self, augmented: bool) -> "BilinearTensor":
        return self.augmented() if augmented else self  # type: ignore[attr-defined]

    def neuron_coeffs(self, u: Float[Tensor, "*k d_out"]) -> Float[Tensor, "*k d_mlp"]:
        """D_u = W_out u: the weight of each neuron's rank-1 form l_k r_kᵀ in Q_u."""
        check_input("u", u, self.d_out, self.W_l, "d_out")  # type: ignore[attr-defined]
        return u if self.W_out is None else u @ self.W_out.T

    def interaction(
        self,
        u: Float[Tensor, "*k d_out"],
        chunk_size: int | None = None,
        augmented: bool = False,
        out: Float[Tensor, "k d d"] | None = None,
    ) -> Float[Tensor, "*k d d"]:
        """Interaction matrix Q_u = ½(W_l D_u W_rᵀ + W_r D_u W_lᵀ), D_u = diag(W_out u), [d_in, d_in].

        Args:
            u: one output direction [d_out] or a batch [k, d_out] (then returns [k, d, d]).
            chunk_size: directions per GEMM; bounds the [chunk, d_in, d_mlp] temporary (default ~64 MiB).
            augmented: use x' = [x, 1], giving [d_in+1, d_in+1] whose last row/column hold ½·(u·Lin)
                and whose corner is u·c, so u·(MLP(x) − b_out) = x'ᵀQ'x'.
            out: optional [k, d, d] buffer to write into (batched u only).

        Cost: 2·d_in²·d_mlp flops per direction, never d_in³.
        """
        bt = self._factors(augmented)
        D = bt.neuron_coeffs(u)
        if u.ndim not in (1, 2):
            raise ValueError(f"u has shape {tuple(u.shape)} but must be [d_out] or [k, d_out]")
        Q = contract_coeffs(bt.W_l, bt.W_r, D.reshape(-1, bt.d_mlp), sym=True, chunk_size=chunk_size, out=out)
        return Q[0] if u.ndim == 1 else Q

    def matvec(
        self, u: Float[Tensor, " d_out"], y: Float[Tensor, "*batch d"], augmented: bool = False
    ) -> Float[Tensor, "*batch d"]:
        """Q_u y = ½(W_l (D_u ⊙ W_rᵀy) + W_r (D_u ⊙ W_lᵀy)) without forming Q_u: O(d_in·d_mlp)."""
        bt = self._factors(augmented)
        check_input("y", y, bt.d_in, bt.W_l, "d_in + 1" if augmented else "d_in")
        return matvec_coeffs(bt.W_l, bt.W_r, bt.neuron_coeffs(u), y)

    def trace(self, u: Float[Tensor, "*k d_out"]) -> Float[Tensor, "*k"]:
        """trace(Q_u) = Σ_k (W_out u)_k (W_l[:,k]·W_r[:,k]) in O(d_in·d_mlp)."""
        return self.neuron_coeffs(u) @ (self.W_l * self.W_r).sum(0)

    def neuron_gram(self) -> Float[Tensor, "d_mlp d_mlp"]:
        """M = ½[(W_lᵀW_l) ⊙ (W_rᵀW_r) + (W_lᵀW_r) ⊙ (W_rᵀW_l)], Gram of the neurons' sym(l_k r_kᵀ)."""
        return factor_gram(self.W_l, self.W_r)

    def gram(self) -> Float[Tensor, "d_out d_out"]:
        """G = W_outᵀ M W_out = B_flat B_flatᵀ with B_flat = B_sym reshaped [d_out, d_in²] (no d³)."""
        M = self.neuron_gram()
        return M if self.W_out is None else self.W_out.T @ M @ self.W_out

    def frobenius_sq(self, u: Float[Tensor, "*k d_out"]) -> Float[Tensor, "*k"]:
        """‖Q_u‖_F² = uᵀ G u = D_uᵀ M D_u, in O(d_in·d_mlp²) without forming Q_u."""
        D = self.neuron_coeffs(u)
        return ((D @ self.neuron_gram()) * D).sum(-1)

    def eig(
        self,
        u: Float[Tensor, " d_out"],
        k: int | None = None,
        method: Literal["auto", "dense", "block", "lanczos"] = "auto",
        augmented: bool = False,
        tol: float | None = None,
        seed: int = 0,
        vector_tol: float | None = None,
    ) -> Eigen:
        """Eigenpairs of Q_u sorted by |λ| descending: u·B(x,x) = Σ_i λ_i (v_i·x)².

        Args:
            u: output direction [d_out] (e.g. ``W_U[:, token]``; see ``directions``).
            k: keep the top-k by |λ| (None: all d_in).
            method: "dense" forms Q_u (d² memory) and runs ``torch.linalg.eigh``; "block" is the
                matrix-free block Krylov solver (O(d·m) per product, both ends of the spectrum, all
                copies of a repeated eigenvalue; see ``block_krylov``); "lanczos" is an alias of
                "block"; "auto" picks "block" for k ≤ d/16 and d > 1024, else "dense".
            augmented: decompose the [d+1, d+1] bias-augmented Q'_u (vectors act on x' = [x, 1]).
            tol: block eigenvalue error tolerance relative to max|λ| (default 1e-5 fp32, 1e-12 fp64).
            seed: block start seed.
            vector_tol: block residual tolerance ‖Qv − λv‖ / max|λ| of the vectors (default 1e-4
                fp32, 1e-10 fp64).
        """
        if method not in _METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
        if u.ndim != 1:
            raise ValueError(f"u has shape {tuple(u.shape)} but eig takes one direction [d_out]; use spectra(U)")
        bt = self._factors(augmented)
        L, R, D = bt.W_l, bt.W_r, bt.neuron_coeffs(u)
        d = bt.d_in
        if k is not None and not 1 <= k <= d:
            raise ValueError(f"k={k} must be in [1, {d}]")
        if method == "auto":
            method = "block" if k is not None and d > _BLOCK_MIN_D and k <= d // 16 else "dense"

        def quad(x: Tensor) -> Tensor:
            return ((x @ L) * (x @ R)) @ D

        if method == "dense":
            Q = contract_coeffs(L, R, D[None], sym=True)[0]
            values, vectors = dense_eigh(Q, k)
            frob = Q.square().sum()
            return Eigen(values, vectors, u, complete=k is None or k == d, frob_sq_fn=lambda: frob, quad=quad)
        vtol = default_vector_tol(L.dtype) if vector_tol is None else vector_tol
        values, vectors, ok = block_krylov(block_apply_coeffs(L, R, D[None]), 1, d, k or d, L, tol=tol,
                                           vector_tol=vtol, seed=seed)
        if not bool(ok.all()):
            import warnings

            warnings.warn(f"eig(method='block', k={k}): the block solver stopped before every residual met tol; "
                          "the values may be inaccurate (use method='dense' or a larger tol)", RuntimeWarning,
                          stacklevel=2)
        M = bt.neuron_gram
        return Eigen(values[0], vectors[0], u, complete=(k or d) == d, frob_sq_fn=lambda: D @ M() @ D, quad=quad)

    def spectra(
        self,
        U: Float[Tensor, "n d_out"],
        vectors: bool = False,
        chunk_size: int | None = None,
        max_bytes: int = 2**30,
        progress: bool = False,
        top: int | None = None,
        method: Literal["auto", "dense", "block"] = "auto",
        tol: float | None = None,
        seed: int = 0,
        vector_tol: float | None = None,
    ) -> Spectra:
        """Spectra of Q_u for many output directions at once (rows of U), each sorted by |λ|.

        Without ``top``: every eigenvalue, by forming Q chunk by chunk (one GEMM per chunk,
        ``contract_coeffs``) into a reused buffer and batched ``eigvalsh``/``eigh``. With ``top=k``:
        the k largest |λ| of each Q_u (both ends of the indefinite spectrum, repeated and ± paired
        eigenvalues with all their copies), by the dense route then truncated, or by the batched
        matrix-free block Krylov solver (``block_krylov``: products for a chunk of directions run as
        two GEMMs, Q never formed).

        Args:
            U: [n, d_out] output directions.
            vectors: also return eigenvectors, [n, d, d] or [n, d, k] (guarded by ``max_bytes``).
            chunk_size: directions per batch (default: about 128 MiB of Q, or 640 rows per product for
                "block": 320 directions at block 2).
            progress: show a progress bar over the directions.
            top: keep the k largest |λ| per direction (None: all d).
            method: with ``top``: "dense", "block", or "auto" ("block" for d ≥ 1024 and k ≤ d/16, where
                bench/realsize.py measured it faster than dense).
            tol: block eigenvalue error tolerance relative to max|λ| (default 1e-5 fp32, 1e-12 fp64):
                the solver stops when every error bound min(‖r‖, ‖r‖²/gap) is below tol·max|λ|.
            seed: block start seed (results are deterministic given it).
            vector_tol: with ``vectors=True``, also stop only once every residual ‖Qv − λv‖ is below
                vector_tol·max|λ| (default 1e-4 fp32, 1e-10 fp64; values alone need fewer products).

        Returns:
            ``Spectra`` with values [n, k], vectors [n, d, k] or None, and ``converged`` [n].
        """
        from hooked_bilinear.progress import tqdm
        from hooked_bilinear.tensor.topk import block_spectra, check_top

        if U.ndim != 2:
            raise ValueError(f"U has shape {tuple(U.shape)} but must be [n, d_out]")
        D = self.neuron_coeffs(U)
        k, d = U.shape[0], self.d_in  # type: ignore[attr-defined]
        kept = check_top(top, d, method)
        if vectors:
            size_guard("the eigenvectors of all Q_u", (k, d, kept), self.W_l.dtype, max_bytes)
        if top is not None and (method == "block" or (method == "auto" and d >= 1024 and top <= d // 16)):
            return block_spectra(self, U, D, top, vectors, chunk_size, progress, tol, seed, vector_tol)
        chunk = max(1, min(k, chunk_size or auto_chunk(d * d, self.W_l.dtype, 2**27)))
        values = self.W_l.new_empty(k, kept)
        vecs = self.W_l.new_empty(k, d, kept) if vectors else None
        work: dict = {}
        Qbuf = None if _needs_grad(self.W_l, self.W_r, D) else self.W_l.new_empty(chunk, d, d)
        bar = tqdm(total=k, desc="spectra", unit="dir", disable=not progress)
        for s in range(0, k, chunk):
            Dc = D[s : s + chunk]
            out = Qbuf[: Dc.shape[0]] if Qbuf is not None else None
            Q = contract_coeffs(self.W_l, self.W_r, Dc, sym=True, out=out, work=work)
            if vectors:
                values[s : s + chunk], vecs[s : s + chunk] = dense_eigh(Q, kept)
            else:
                values[s : s + chunk] = sort_by_magnitude(torch.linalg.eigvalsh(Q))[0][:, :kept]
            bar.update(Dc.shape[0])
        bar.close()
        return Spectra(values, vecs, U, torch.ones(k, dtype=torch.bool, device=values.device))

    def hosvd(
        self, k: int | None = None, rtol: float | None = None, interactions: bool = True, max_bytes: int = 2**30
    ) -> "HOSVD":
        """HOSVD of B_sym over output directions by the Gram route: B_sym = Σ_k u_k ⊗ σ_k Q_k.

        See ``hooked_bilinear.tensor.hosvd.hosvd`` for the arguments.
        """
        from hooked_bilinear.tensor.hosvd import hosvd

        return hosvd(self, k=k, rtol=rtol, interactions=interactions, max_bytes=max_bytes)  # type: ignore[arg-type]
