"""HOSVD of the symmetric bilinear tensor over output directions, by the Gram route (§1.5, [P] §3.3).

    M = ½[(W_lᵀW_l) ⊙ (W_rᵀW_r) + (W_lᵀW_r) ⊙ (W_rᵀW_l)]     [d_mlp, d_mlp]
    G = W_outᵀ M W_out = B_flat B_flatᵀ,  B_flat = B_sym.reshape(d_out, d_in²)
    σ_k² = eig(G),  u_k = eigvec(G),  Q_k = Q_{u_k} / σ_k,   B_sym = Σ_k u_k ⊗ σ_k Q_k

Cost O(d_in·d_mlp² + d_mlp²·d_out + d_out³) instead of the d_out·d_in² SVD.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.tensor._validate import size_guard

if TYPE_CHECKING:
    from hooked_bilinear.tensor.bilinear_tensor import BilinearTensor


@dataclass(frozen=True)
class HOSVD:
    """Output-mode SVD of B_sym: B_sym = Σ_k u_k ⊗ σ_k Q_k with orthonormal u_k and ‖Q_k‖_F = 1.

    Attributes:
        directions: [d_out, r] output directions u_k as columns (left singular vectors).
        singular_values: [r] σ_k, descending.
        interactions: [r, d_in, d_in] Q_k = Q_{u_k}/σ_k (right singular vectors reshaped), or None.
        total_sq: ‖B_sym‖_F² = trace(G), for explained fractions.
    """

    directions: Float[Tensor, "d_out r"]
    singular_values: Float[Tensor, " r"]
    interactions: Float[Tensor, "r d d"] | None
    total_sq: Float[Tensor, ""]

    def __len__(self) -> int:
        return self.singular_values.shape[0]

    def explained(self) -> Float[Tensor, " r"]:
        """Fraction σ_k² / ‖B_sym‖_F² of the tensor's squared norm in each component."""
        return self.singular_values.square() / self.total_sq

    def reconstruct(self, k: int | None = None) -> Float[Tensor, "d_out d d"]:
        """Σ_{i<k} u_i ⊗ σ_i Q_i as a dense [d_out, d_in, d_in] tensor (small models only)."""
        if self.interactions is None:
            raise ValueError("this HOSVD was computed with interactions=False")
        S = self.singular_values[:k]
        return torch.einsum("or,rij->oij", self.directions[:, :k] * S, self.interactions[:k])


def hosvd(
    bt: "BilinearTensor",
    k: int | None = None,
    rtol: float | None = None,
    interactions: bool = True,
    max_bytes: int = 2**30,
) -> HOSVD:
    """HOSVD of ``bt``'s B_sym over the output mode, without forming B.

    Args:
        bt: the bilinear tensor.
        k: keep at most the top-k components (None: all above the rank cutoff).
        rtol: drop σ_k ≤ rtol·σ_max. Default 10·√eps: σ² = eig(G) is accurate to ~eps·σ_max², so
            smaller σ are not resolved by the Gram route (and Q_k = Q_{u_k}/σ_k would be noise).
        interactions: also form the [r, d_in, d_in] matrices Q_k (guarded by ``max_bytes``).

    Returns:
        HOSVD with directions u_k [d_out, r], σ_k [r] and Q_k [r, d_in, d_in].
    """
    G = bt.gram()
    evals, evecs = torch.linalg.eigh(G)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma = evals.clamp_min(0).sqrt()
    rtol = rtol if rtol is not None else 10 * torch.finfo(G.dtype).eps ** 0.5
    r = int((sigma > rtol * sigma[0]).sum()) if sigma[0] > 0 else 0
    if k is not None:
        if k < 1:
            raise ValueError(f"k={k} must be ≥ 1")
        r = min(r, k)
    U, S = evecs[:, :r], sigma[:r]
    Q = None
    if interactions:
        size_guard("the HOSVD interaction matrices", (r, bt.d_in, bt.d_in), G.dtype, max_bytes)
        Q = bt.interaction(U.T) / S[:, None, None]
    return HOSVD(U, S, Q, G.trace())
