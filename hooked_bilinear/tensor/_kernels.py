"""Contractions of a rank-m CP tensor T[o,i,j] = Σ_k P[k,o] L[i,k] R[j,k] that never form T.

Both the residual-space bilinear tensor (L=W_l, R=W_r, P=W_out) and the token-space tensors of §4
(L=W_E W_l, R=W_E W_r, P=W_out W_U) have this form, so their classes share these kernels.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.tensor._validate import auto_chunk

# Temporary budget for a single direction (bench/tensor.py measures the peak of Q_u + eigh).
SINGLE_BYTES = 2**20


def _needs_grad(*ts: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _buffer(work: dict | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A scratch tensor of ``shape``, reused from ``work`` when one large enough is held there."""
    n = 1
    for s in shape:
        n *= s
    held = work.get(name) if work is not None else None
    if held is None or held.numel() < n or held.dtype != like.dtype or held.device != like.device:
        held = torch.empty(n, dtype=like.dtype, device=like.device)
        if work is not None:
            work[name] = held
    return held[:n].view(shape)


def contract_coeffs(
    L: Float[Tensor, "d m"],
    R: Float[Tensor, "d m"],
    D: Float[Tensor, "k m"],
    sym: bool = True,
    chunk_size: int | None = None,
    out: Float[Tensor, "k d d"] | None = None,
    work: dict | None = None,
) -> Float[Tensor, "k d d"]:
    """Stack of A_c = L diag(D_c) Rᵀ (or its symmetric part ½(A_c + A_cᵀ)), chunked over c.

    One GEMM of shape [chunk·d, m] @ [m, d] per chunk; the temporary [chunk, d, m] buffer is what
    ``chunk_size`` bounds (default: about 64 MiB). Costs 2·d²·m flops per row of D. ``out`` and the
    scratch dict ``work`` let a caller looping over many chunks reuse memory (no autograd then).
    """
    k, m = D.shape
    d = L.shape[0]
    chunk = max(1, chunk_size or auto_chunk(d * m, L.dtype))
    if sym:
        D = 0.5 * D  # fold the ½ of the symmetrisation into the coefficients
    Rt = R.T
    if _needs_grad(L, R, D):  # out= buffers do not support autograd
        if out is not None:
            raise ValueError("out= cannot be used while gradients are tracked; use torch.no_grad() or drop out")
        parts = []
        for s in range(0, k, chunk):
            Dc = D[s : s + chunk]
            A = ((L.unsqueeze(0) * Dc.unsqueeze(1)).reshape(-1, m) @ Rt).view(-1, d, d)
            parts.append(A + A.mT if sym else A)
        return torch.cat(parts) if parts else L.new_zeros(0, d, d)
    if out is None:
        out = torch.empty(k, d, d, dtype=L.dtype, device=L.device)
    elif out.shape != (k, d, d) or not out.is_contiguous() or out.dtype != L.dtype or out.device != L.device:
        raise ValueError(
            f"out has shape {tuple(out.shape)} ({out.dtype}, contiguous={out.is_contiguous()}) but must be a "
            f"contiguous {(k, d, d)} {L.dtype} tensor on {L.device}"
        )
    if k == 1:
        return _single(L, Rt, D[0], sym, out)
    c_max = min(chunk, k)
    scaled = _buffer(work, "scaled", (c_max, d, m), L)
    prod = _buffer(work, "prod", (c_max * d, d), L) if sym else None
    for s in range(0, k, chunk):
        Dc = D[s : s + chunk]
        c = Dc.shape[0]
        buf = scaled[:c]
        torch.mul(L.unsqueeze(0), Dc.unsqueeze(1), out=buf)
        if sym:
            A = torch.matmul(buf.view(c * d, m), Rt, out=prod[: c * d]).view(c, d, d)
            torch.add(A, A.mT, out=out[s : s + c])
        else:
            torch.matmul(buf.view(c * d, m), Rt, out=out[s : s + c].view(c * d, d))
    return out


def _single(L: Tensor, Rt: Tensor, D: Tensor, sym: bool, out: Tensor) -> Tensor:
    """One direction: row blocks of L diag(D) Rᵀ written straight into ``out``, then symmetrised in
    place, so the only temporaries are ~1 MiB (not the d·m scaled copy of L nor a second d×d)."""
    d, m = L.shape
    rows = max(1, min(d, SINGLE_BYTES // (m * L.element_size())))
    A = out[0]
    for r0 in range(0, d, rows):
        torch.matmul(L[r0 : r0 + rows] * D, Rt, out=A[r0 : r0 + rows])
    if sym:
        _add_transpose_(A, block=256)
    return out


def _add_transpose_(A: Tensor, block: int) -> None:
    """A ← A + Aᵀ in place, one pair of square blocks at a time (a [block, block] temporary)."""
    d = A.shape[0]
    for i in range(0, d, block):
        for j in range(i, d, block):
            upper, lower = A[i : i + block, j : j + block], A[j : j + block, i : i + block]
            t = upper + lower.T
            upper.copy_(t)
            if i != j:
                lower.copy_(t.T)


def matvec_coeffs(
    L: Float[Tensor, "d m"],
    R: Float[Tensor, "d m"],
    D: Float[Tensor, "*bd m"],
    y: Float[Tensor, "*by d"],
) -> Float[Tensor, "*b d"]:
    """y Q with Q = ½(L diag(D) Rᵀ + R diag(D) Lᵀ), matrix-free in O(d·m): Q never formed."""
    return 0.5 * (((y @ R) * D) @ L.T + ((y @ L) * D) @ R.T)


def factor_gram(L: Float[Tensor, "d m"], R: Float[Tensor, "d m"]) -> Float[Tensor, "m m"]:
    """M = ½[(LᵀL) ⊙ (RᵀR) + (LᵀR) ⊙ (RᵀL)], the Gram matrix of the symmetrised rank-1 slices."""
    LtR = L.T @ R
    return 0.5 * ((L.T @ L) * (R.T @ R) + LtR * LtR.T)


def evaluate(
    L: Float[Tensor, "d m"],
    R: Float[Tensor, "d m"],
    P: Float[Tensor, "m n"] | None,
    x: Float[Tensor, "*bx d"],
    y: Float[Tensor, "*by d"],
) -> Float[Tensor, "*b n"]:
    """Ordered T(x, y) = ((x L) ⊙ (y R)) P, batched over (broadcast) leading dims."""
    h = (x @ L) * (y @ R)
    return h if P is None else h @ P


def block_apply_coeffs(L: Float[Tensor, "d m"], R: Float[Tensor, "d m"], D: Float[Tensor, "n m"]):
    """``apply(Y, idx)``: rows Y [n', b, d] times Q_c = ½(L diag(D_c) Rᵀ + R diag(D_c) Lᵀ), c = idx.

    Two GEMMs over all n'·b rows against F = [L, R] [d, 2m] (8·d·m flops a row), Q never formed:
    Y Q = ½ [(Y R) ⊙ D, (Y L) ⊙ D] Fᵀ.
    """
    m = L.shape[1]
    F = torch.cat([L, R], dim=1)
    Ft = F.T

    def apply(Y: Tensor, idx: Tensor) -> Tensor:
        n, b, d = Y.shape
        P = (Y.reshape(n * b, d) @ F).view(n, b, 2 * m)
        Dc = (0.5 * D[idx]).unsqueeze(1)
        G = torch.cat([P[..., m:] * Dc, P[..., :m] * Dc], dim=-1)
        return (G.view(n * b, 2 * m) @ Ft).view(n, b, d)

    return apply
