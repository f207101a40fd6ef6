"""Batched top-k spectra by the block Krylov solver: ``BilinearTensor.spectra(U, top=k, method="block")``."""

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooked_bilinear.tensor._kernels import block_apply_coeffs
from hooked_bilinear.tensor.block_krylov import block_krylov, default_block, default_vector_tol
from hooked_bilinear.tensor.eigen import Spectra

if TYPE_CHECKING:
    from hooked_bilinear.tensor.bilinear_tensor import BilinearTensor

BLOCK_ROWS = 640  # rows per batched product (directions × block): GEMMs this tall run near the peak rate;
# the basis then holds ~640·128 rows (~0.7 GiB at d=1024 in float32, with its images)


def check_top(top: int | None, d: int, method: str) -> int:
    """The number of eigenpairs kept per direction; raises on a bad ``top`` or ``method``."""
    if method not in ("auto", "dense", "block"):
        raise ValueError(f"method must be 'auto', 'dense' or 'block', got {method!r}")
    if top is None:
        if method == "block":
            raise ValueError("method='block' computes the top-k eigenpairs; pass top=k (1 ≤ k ≤ d)")
        return d
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= d:
        raise ValueError(f"top={top!r} must be an int in [1, d_in={d}]")
    return top


def block_spectra(
    bt: "BilinearTensor",
    U: Tensor,
    D: Tensor,
    k: int,
    vectors: bool,
    chunk_size: int | None,
    progress: bool,
    tol: float | None,
    seed: int,
    vector_tol: float | None = None,
) -> Spectra:
    """Top-k spectra of Q_u for the rows of U (D = U W_outᵀ), ``chunk_size`` directions per solve.

    ``vector_tol`` defaults to ``default_vector_tol`` when vectors are returned (None otherwise: the
    stopping rule is on the values only). Each chunk's start block is drawn from ``seed`` and the
    chunk's first index, so the result of a direction depends only on the chunk it is in (and not on
    which process ran it).
    """
    from hooked_bilinear.progress import tqdm

    n, d = U.shape[0], bt.d_in
    if vectors and vector_tol is None:
        vector_tol = default_vector_tol(bt.W_l.dtype)
    chunk = max(1, min(n, chunk_size or BLOCK_ROWS // default_block(k)))
    values = bt.W_l.new_empty(n, k)
    vecs = bt.W_l.new_empty(n, d, k) if vectors else None
    converged = torch.ones(n, dtype=torch.bool, device=bt.device)
    bar = tqdm(total=n, desc="spectra", unit="dir", disable=not progress)
    with torch.no_grad():
        for s in range(0, n, chunk):
            Dc = D[s : s + chunk]
            v, V, ok = block_krylov(block_apply_coeffs(bt.W_l, bt.W_r, Dc), Dc.shape[0], d, k, bt.W_l,
                                    tol=tol, vector_tol=vector_tol, seed=seed + s)
            values[s : s + chunk], converged[s : s + chunk] = v, ok
            if vecs is not None:
                vecs[s : s + chunk] = V
            bar.update(Dc.shape[0])
    bar.close()
    return Spectra(values, vecs, U, converged)
