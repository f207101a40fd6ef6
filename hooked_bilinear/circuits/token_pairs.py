"""Cross-component token tensors of a bilinear MLP: inputs from two *different* sources (spec §2.2, §4).

For a pair of residual components with token maps E1 [V1, d] and E2 [V2, d] (e.g. the direct path W_E and
a head's OV output W_E W_V W_O), the unordered MLP path term is B(x,y) + B(y,x) = 2 B_sym(x,y), read by
the unembedding. Over tokens this is the ordered [V_out, V1, V2] tensor

    T[c,a,b] = Σ_k (E1 W_l)[a,k] (E2 W_r)[b,k] Pf[k,c] + (E2 W_l)[b,k] (E1 W_r)[a,k] Pf[k,c]

a CP tensor of rank 2·d_mlp with factors L = [E1 W_l | E1 W_r], R = [E2 W_r | E2 W_l], P = [Pf; Pf].
Unlike the same-source tensors (`hooked_bilinear.tensor.TokenBilinear`), a and b live in different
spaces (current token vs. attended-to token), so T is not symmetrised and has no eigendecomposition.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_bilinear.tensor import MaterializeTooLargeError

DEFAULT_MAX_BYTES = 2**30


class TokenPairTensor:
    """Ordered rank-2m CP tensor T[c, a, b] over (first-source token a, second-source token b).

    Example:
        >>> eh = mlp_token_tensor(model, 0, "embed", (0, 1))    # current token × token seen by head 0.1
        >>> vals, a, b = eh.top_pairs(c=7, k=5)
    """

    def __init__(self, E1: Float[Tensor, "V1 d"], E2: Float[Tensor, "V2 d"], W_l: Float[Tensor, "d m"],
                 W_r: Float[Tensor, "d m"], Pf: Float[Tensor, "m V_out"], names: tuple[str, str] = ("a", "b")):
        self.L = torch.cat([E1 @ W_l, E1 @ W_r], dim=1)  # [V1, 2m]
        self.R = torch.cat([E2 @ W_r, E2 @ W_l], dim=1)  # [V2, 2m]
        self.P = torch.cat([Pf, Pf], dim=0)  # [2m, V_out]
        self.names = names

    @property
    def shape(self) -> tuple[int, int, int]:
        """(V_out, V1, V2)."""
        return self.P.shape[1], self.L.shape[0], self.R.shape[0]

    def __repr__(self) -> str:
        V_out, V1, V2 = self.shape
        return f"TokenPairTensor({self.names[0]} × {self.names[1]}: V_out={V_out}, V1={V1}, V2={V2}, rank={self.L.shape[1]})"

    def pair_logits(self, a: int | Int[Tensor, " n"], b: int | Int[Tensor, " n"]) -> Float[Tensor, "*n V_out"]:
        """T[:, a, b]: the logits the pair (a, b) writes, O(m·V_out)."""
        return (self.L[a] * self.R[b]) @ self.P

    def row(self, c: int, a: int) -> Float[Tensor, " V2"]:
        """T[c, a, :], O(V2·m)."""
        return self.R @ (self.L[a] * self.P[:, c])

    def _blocks(self, c: int, chunk_size: int):
        D = self.P[:, c]
        for a0 in range(0, self.L.shape[0], chunk_size):
            yield a0, (self.L[a0:a0 + chunk_size] * D) @ self.R.T

    def interaction(self, c: int, chunk_size: int = 1024) -> Float[Tensor, "V1 V2"]:
        """T[c] = L diag(P[:, c]) Rᵀ, [V1, V2] (not symmetric: rows and columns are different sources)."""
        return torch.cat([blk for _, blk in self._blocks(c, chunk_size)])

    def top_pairs(self, c: int, k: int = 10, chunk_size: int = 1024, largest: bool = True
                  ) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"], Int[Tensor, " k"]]:
        """Top-k (a, b) by T[c, a, b], found block by block: O(V1·V2·m) time, O(chunk·V2) memory."""
        V2 = self.R.shape[0]
        if not 1 <= k <= self.L.shape[0] * V2:
            raise ValueError(f"k={k} must be in [1, {self.L.shape[0] * V2}]")
        best_v, best_i = self.L.new_empty(0), torch.empty(0, dtype=torch.long, device=self.L.device)
        for a0, blk in self._blocks(c, chunk_size):
            v, i = blk.reshape(-1).topk(min(k, blk.numel()), largest=largest)
            best_v, best_i = torch.cat([best_v, v]), torch.cat([best_i, i + a0 * V2])
            best_v, keep = best_v.topk(min(k, best_v.numel()), largest=largest)
            best_i = best_i[keep]
        return best_v, best_i // V2, best_i % V2

    def materialize(self, max_bytes: int = DEFAULT_MAX_BYTES) -> Float[Tensor, "V_out V1 V2"]:
        """The dense tensor (V_out·V1·V2 memory). Refused above `max_bytes` with MaterializeTooLargeError."""
        shape = self.shape
        n_bytes = shape[0] * shape[1] * shape[2] * self.L.element_size()
        if n_bytes > max_bytes:
            raise MaterializeTooLargeError("the token pair tensor T", shape, self.L.dtype, n_bytes, max_bytes)
        return torch.einsum("ak,bk,kc->cab", self.L, self.R, self.P)
