"""Weight-only token-space tensors of a bilinear MLP (§4), queried without the V_out·V² tensor.

    T[c,a,b] = Σ_k Lf[a,k] Rf[b,k] Pf[k,c],   Lf = W_E W_l, Rf = W_E W_r, Pf = W_out W_U
    T_sym[c,a,b] = ½(T[c,a,b] + T[c,b,a])

Head×MLP tensors use the same class with other factors (e.g. Rf = W_E W_OV W_r).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_bilinear.tensor._kernels import contract_coeffs, factor_gram
from hooked_bilinear.tensor._validate import auto_chunk, check_dim, check_like, check_tensor, size_guard
from hooked_bilinear.tensor.bilinear_tensor import DEFAULT_MAX_BYTES, BilinearTensor
from hooked_bilinear.tensor.eigen import Eigen, dense_eigh

Index = int | Int[Tensor, " n"]


@dataclass(frozen=True)
class TokenEigen:
    """Eigen of a token interaction matrix: T_sym[c] = Σ_i λ_i t_i t_iᵀ with t_i = W_E v_i (exact).

    Attributes:
        eigen: eigenpairs in the space they were computed in (residual space via ``residual``).
        token_vectors: [V, n] columns t_i; not orthogonal when computed through the residual space.
    """

    eigen: Eigen
    token_vectors: Float[Tensor, "V n"]

    @property
    def values(self) -> Float[Tensor, " n"]:
        return self.eigen.values

    def matrix(self, k: int | None = None) -> Float[Tensor, "V V"]:
        """Σ_{i<k} λ_i t_i t_iᵀ ([V, V]; equals T_sym[c] for k=None and a complete eigen)."""
        t = self.token_vectors[:, :k]
        return (t * self.values[:k]) @ t.T


class TokenBilinear:
    """Rank-m CP tensor over tokens T[c,a,b] = Σ_k Lf[a,k] Rf[b,k] Pf[k,c], kept factored.

    Args:
        Lf: [V, m] left token factors (e.g. W_E W_l).
        Rf: [V, m] right token factors (e.g. W_E W_r).
        Pf: [m, V_out] output factors (e.g. W_out W_U).
        residual: optional residual-space tensor with Lf = W_E W_l, Rf = W_E W_r, enabling
            ``eig`` through the d_model-space Q_u (d³ instead of V³).
        W_E: [V, d] embedding for that route; W_U: [d_out, V_out] unembedding (None: identity).

    Example:
        >>> tb = TokenBilinear.from_weights(model.W_E, mlp.W_l, mlp.W_r, mlp.W_out, model.W_U)
        >>> vals, a, b = tb.top_pairs(c=7, k=5)
    """

    def __init__(
        self,
        Lf: Float[Tensor, "V m"],
        Rf: Float[Tensor, "V m"],
        Pf: Float[Tensor, "m V_out"],
        residual: BilinearTensor | None = None,
        W_E: Float[Tensor, "V d"] | None = None,
        W_U: Float[Tensor, "d_out V_out"] | None = None,
    ):
        for name, t in (("Lf", Lf), ("Rf", Rf), ("Pf", Pf)):
            check_tensor(name, t, 2)
            check_like(name, t, Lf, "Lf")
        if Rf.shape != Lf.shape:
            raise ValueError(f"Lf has shape {tuple(Lf.shape)} but Rf has shape {tuple(Rf.shape)}; both must be [V, m]")
        check_dim("Pf", Pf, 0, Lf.shape[1], f"m of Lf {tuple(Lf.shape)}")
        if residual is not None and W_E is None:
            raise ValueError("residual needs the embedding W_E [V, d] that maps it to tokens")
        self.Lf, self.Rf, self.Pf = Lf, Rf, Pf
        self.residual, self.W_E, self.W_U = residual, W_E, W_U

    @classmethod
    def from_weights(
        cls,
        W_E: Float[Tensor, "V d"],
        W_l: Float[Tensor, "d m"],
        W_r: Float[Tensor, "d m"],
        W_out: Float[Tensor, "m d_out"] | None = None,
        W_U: Float[Tensor, "d_out V_out"] | None = None,
        W_E_right: Float[Tensor, "V d"] | None = None,
    ) -> "TokenBilinear":
        """Lf = W_E W_l, Rf = W_E_right W_r (default W_E), Pf = W_out W_U (None: identity).

        Biases are not included: this is the weight-only quadratic (direct×direct) tensor.
        """
        residual = BilinearTensor(W_l, W_r, W_out)
        right = W_E if W_E_right is None else W_E_right
        Pf = residual.W_out if residual.W_out is not None else torch.eye(residual.d_mlp, dtype=W_l.dtype, device=W_l.device)
        Pf = Pf if W_U is None else Pf @ W_U
        same = W_E_right is None
        return cls(W_E @ W_l, right @ W_r, Pf, residual if same else None, W_E if same else None, W_U)

    @property
    def V(self) -> int:
        return self.Lf.shape[0]

    @property
    def V_out(self) -> int:
        return self.Pf.shape[1]

    @property
    def m(self) -> int:
        return self.Lf.shape[1]

    def __repr__(self) -> str:
        return (
            f"TokenBilinear(V={self.V}, m={self.m}, V_out={self.V_out}, residual={self.residual is not None}, "
            f"dtype={self.Lf.dtype}, device={self.Lf.device})"
        )

    def _check_index(self, name: str, i: Index, n: int) -> None:
        lo, hi = (i, i) if isinstance(i, int) else (int(i.min()), int(i.max())) if i.numel() else (0, 0)
        if lo < 0 or hi >= n:
            raise IndexError(f"{name}={i if isinstance(i, int) else f'[{lo}..{hi}]'} is out of range [0, {n})")

    def pair_logits(self, a: Index, b: Index) -> Float[Tensor, "*n V_out"]:
        """T_sym[:, a, b] = ½(Lf[a]⊙Rf[b] + Lf[b]⊙Rf[a]) Pf for input pair(s) (a, b): O(m·V_out)."""
        self._check_index("a", a, self.V)
        self._check_index("b", b, self.V)
        return 0.5 * (self.Lf[a] * self.Rf[b] + self.Lf[b] * self.Rf[a]) @ self.Pf

    def row(self, c: int, a: int) -> Float[Tensor, " V"]:
        """T_sym[c, a, :] = ½(Rf (Lf[a]⊙Pf[:,c]) + Lf (Rf[a]⊙Pf[:,c])): O(V·m)."""
        self._check_index("c", c, self.V_out)
        self._check_index("a", a, self.V)
        D = self.Pf[:, c]
        return 0.5 * (self.Rf @ (self.Lf[a] * D) + self.Lf @ (self.Rf[a] * D))

    def _blocks(self, c: int, chunk_size: int | None):
        """Yield (a0, block) with block = T_sym[c, a0:a0+n, :], O(chunk·(V + m)) memory each."""
        self._check_index("c", c, self.V_out)
        D = 0.5 * self.Pf[:, c]
        chunk = chunk_size or auto_chunk(self.V + self.m, self.Lf.dtype)
        for a0 in range(0, self.V, chunk):
            sl = slice(a0, a0 + chunk)
            yield a0, (self.Lf[sl] * D) @ self.Rf.T + (self.Rf[sl] * D) @ self.Lf.T

    def interaction(self, c: int, chunk_size: int | None = None) -> Float[Tensor, "V V"]:
        """Token interaction matrix Q_c = T_sym[c] = ½(Lf D_c Rfᵀ + Rf D_c Lfᵀ), D_c = diag(Pf[:, c])."""
        return torch.cat([blk for _, blk in self._blocks(c, chunk_size)])

    def top_pairs(
        self, c: int, k: int = 10, chunk_size: int | None = None, largest: bool = True
    ) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"], Int[Tensor, " k"]]:
        """Top-k unordered input pairs a ≤ b by T_sym[c, a, b], in O(V²·m) time and O(chunk·V) memory.

        Returns:
            (values, a, b), best first. Note a pair's total contribution to the quadratic form of
            x = e_a + e_b is T_sym[c,a,a] + T_sym[c,b,b] + 2·T_sym[c,a,b]; this ranks the cross term.
        """
        n_pairs = self.V * (self.V + 1) // 2
        if not 1 <= k <= n_pairs:
            raise ValueError(f"k={k} must be in [1, {n_pairs}] (unordered pairs of V={self.V} tokens)")
        fill = float("-inf") if largest else float("inf")
        best_v = self.Lf.new_empty(0)
        best_i = torch.empty(0, dtype=torch.long, device=self.Lf.device)
        cols = torch.arange(self.V, device=self.Lf.device)
        for a0, blk in self._blocks(c, chunk_size):
            rows = torch.arange(a0, a0 + blk.shape[0], device=blk.device)
            blk = blk.masked_fill(cols[None, :] < rows[:, None], fill)  # keep b ≥ a only
            v, i = blk.reshape(-1).topk(min(k, blk.numel()), largest=largest)
            best_v = torch.cat([best_v, v])
            best_i = torch.cat([best_i, i + a0 * self.V])
            best_v, keep = best_v.topk(min(k, best_v.numel()), largest=largest)
            best_i = best_i[keep]
        return best_v, best_i // self.V, best_i % self.V

    def bigram_diagonal(self) -> Float[Tensor, "V V_out"]:
        """D[a, c] = T[c, a, a] = ((Lf ⊙ Rf) Pf)[a, c]: the only part direct×direct paths use (§7.2)."""
        return (self.Lf * self.Rf) @ self.Pf

    def gram(self) -> Float[Tensor, "V_out V_out"]:
        """G = Pfᵀ M Pf = T_flat T_flatᵀ (T_sym reshaped [V_out, V²]); token-space HOSVD Gram."""
        return self.Pf.T @ factor_gram(self.Lf, self.Rf) @ self.Pf

    def eig(
        self, c: int, k: int | None = None, method: Literal["auto", "dense", "block", "lanczos"] = "auto",
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> TokenEigen:
        """Eigen of T_sym[c]: via the residual space Q_u, u = W_U[:, c], then t_i = W_E v_i (exact).

        Without a residual tensor, falls back to dense ``eigh`` of the [V, V] matrix (guarded).
        """
        self._check_index("c", c, self.V_out)
        if self.residual is not None:
            if self.W_U is not None:
                u = self.W_U[:, c]
            else:
                u = torch.zeros(self.residual.d_out, dtype=self.Lf.dtype, device=self.Lf.device)
                u[c] = 1
            eg = self.residual.eig(u, k=k, method=method)
            return TokenEigen(eg, eg.to_input_space(self.W_E))
        size_guard("the token interaction matrix", (self.V, self.V), self.Lf.dtype, max_bytes)
        values, vectors = dense_eigh(self.interaction(c), k)
        return TokenEigen(Eigen(values, vectors, None, complete=k is None or k == self.V), vectors)

    def materialize(self, sym: bool = True, max_bytes: int = DEFAULT_MAX_BYTES) -> Float[Tensor, "V_out V V"]:
        """Dense T_sym (or ordered T) [V_out, V, V]: V_out·V² memory, V_out·V²·m flops.

        Raises:
            MaterializeTooLargeError: above ``max_bytes`` (V = 4096 would need ~275 GB in fp32).
        """
        size_guard("T_sym" if sym else "T", (self.V_out, self.V, self.V), self.Lf.dtype, max_bytes)
        return contract_coeffs(self.Lf, self.Rf, self.Pf.T, sym=sym)
