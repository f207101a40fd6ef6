"""The bilinear tensor B[o,i,j] = Σ_k W_out[k,o] W_l[i,k] W_r[j,k] of a bilinear MLP, kept factored.

    MLP(x) = ((x W_l + b_l) ⊙ (x W_r + b_r)) W_out + b_out = B(x,x) + Lin x + c + b_out      (§1)

Nothing here forms the d_out·d_in² tensor unless ``materialize`` is called. Interaction matrices,
spectra and HOSVD live in ``spectral.py`` (the ``SpectralMethods`` base class).
"""

import functools

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.tensor._kernels import contract_coeffs, evaluate
from hooked_bilinear.tensor._validate import check_dim, check_input, check_like, check_tensor, size_guard
from hooked_bilinear.tensor.errors import NotBilinearError
from hooked_bilinear.tensor.spectral import SpectralMethods

DEFAULT_MAX_BYTES = 2**30  # 1 GiB: the default ceiling for materialize()

_BILINEAR_GATES = (None, "none", "identity", "bilinear", "linear")


def _gate_of(layer: object) -> object:
    """The gate of a layer: ``layer.cfg.gate`` if present, else ``layer.gate`` (None = bilinear)."""
    cfg = getattr(layer, "cfg", None)
    if cfg is not None and hasattr(cfg, "gate"):
        return cfg.gate
    gate = getattr(layer, "gate", None)
    if isinstance(gate, torch.nn.Identity):
        return None
    return gate


class BilinearTensor(SpectralMethods):
    """Factored third-order tensor of a bilinear layer, with its bias parts.

    Shapes (TransformerLens input-first): W_l, W_r [d_in, d_mlp]; W_out [d_mlp, d_out] (None means
    the identity, d_out = d_mlp); b_l, b_r [d_mlp]; b_out [d_out] (None means zero). Every query
    runs on the weights' dtype and device; inputs must match them. Gradients flow through.

    Example:
        >>> bt = BilinearTensor.from_layer(model.blocks[0].mlp)
        >>> eg = bt.eig(model.W_U[:, token])        # u·MLP(x) = Σ λ_i (v_i·x)²  (bias-free part)
    """

    def __init__(
        self,
        W_l: Float[Tensor, "d_in d_mlp"],
        W_r: Float[Tensor, "d_in d_mlp"],
        W_out: Float[Tensor, "d_mlp d_out"] | None = None,
        b_l: Float[Tensor, " d_mlp"] | None = None,
        b_r: Float[Tensor, " d_mlp"] | None = None,
        b_out: Float[Tensor, " d_out"] | None = None,
    ):
        check_tensor("W_l", W_l, 2)
        check_tensor("W_r", W_r, 2)
        if W_l.shape != W_r.shape:
            raise ValueError(
                f"W_l has shape {tuple(W_l.shape)} but W_r has shape {tuple(W_r.shape)}; "
                "both must be [d_in, d_mlp]"
            )
        check_like("W_r", W_r, W_l, "W_l")
        d_in, m = W_l.shape
        if W_out is not None:
            check_tensor("W_out", W_out, 2)
            check_dim("W_out", W_out, 0, m, f"d_mlp of W_l {tuple(W_l.shape)}")
            check_like("W_out", W_out, W_l, "W_l")
        d_out = W_out.shape[1] if W_out is not None else m
        for name, b, n, what in (("b_l", b_l, m, "d_mlp"), ("b_r", b_r, m, "d_mlp"), ("b_out", b_out, d_out, "d_out")):
            if b is not None:
                check_tensor(name, b, 1)
                check_dim(name, b, 0, n, f"{what}={n}")
                check_like(name, b, W_l, "W_l")
        self.W_l, self.W_r, self.W_out = W_l, W_r, W_out
        self.b_l, self.b_r, self.b_out = b_l, b_r, b_out
        # Queries keep autograd history only when the weights carry it (from_layer(..., grad=True), or
        # tensors that require grad): otherwise they return plain tensors, whatever the inputs carry.
        self.grad = any(t is not None and t.requires_grad for t in (W_l, W_r, W_out, b_l, b_r, b_out))

    @classmethod
    def from_layer(
        cls,
        layer: object,
        W_out: Float[Tensor, "d_mlp d_out"] | None = None,
        b_out: Float[Tensor, " d_out"] | None = None,
        grad: bool = False,
    ) -> "BilinearTensor":
        """Build from any object with ``W_l, W_r`` (and optionally ``W_out, b_l, b_r, b_out``).

        Args:
            layer: e.g. ``model.blocks[l].mlp``. Refused if ``layer.cfg.gate`` (or ``layer.gate``)
                is set: a SwiGLU/ReGLU/GeGLU layer is not a polynomial, so it has no exact tensor.
            W_out: down-projection for a layer that has none, e.g. the classifier head [d_mlp, n_cls]
                of an image model whose bilinear layer feeds the head directly.
            b_out: its bias, with ``W_out``.
            grad: keep the layer's parameters, so every query result carries autograd history (for a loss
                on eigenvalues, say). By default the weights are detached: results are plain tensors.

        Raises:
            NotBilinearError: the layer has a gate activation.
            ValueError: ``W_out`` given for a layer that already has one (compose it explicitly).
        """
        gate = _gate_of(layer)
        if not (gate is None or (isinstance(gate, str) and gate.lower() in _BILINEAR_GATES)):
            name = gate if isinstance(gate, str) else getattr(gate, "__name__", repr(gate))
            raise NotBilinearError(
                f"{type(layer).__name__} has gate={name!r}, so it computes gate(x W_l) ⊙ (x W_r), which is "
                "not bilinear and has no exact third-order tensor; only gate=None layers are supported"
            )
        missing = [a for a in ("W_l", "W_r") if getattr(layer, a, None) is None]
        if missing:
            raise TypeError(
                f"{type(layer).__name__} has no {', '.join(missing)}; from_layer needs W_l, W_r [d_model, d_mlp] "
                "and optionally W_out [d_mlp, d_out], b_l, b_r, b_out"
            )
        own = getattr(layer, "W_out", None)
        if W_out is not None and own is not None:
            raise ValueError(
                f"{type(layer).__name__} already has W_out {tuple(own.shape)}; to read its output through another "
                "map use an output direction, or BilinearTensor(W_l, W_r, layer.W_out @ W, ...) explicitly"
            )
        if own is not None:
            W_out, b_out = own, getattr(layer, "b_out", None)
        parts = (layer.W_l, layer.W_r, W_out, getattr(layer, "b_l", None), getattr(layer, "b_r", None), b_out)
        if not grad:
            parts = tuple(None if t is None else t.detach() for t in parts)
        return cls(*parts)

    # ---------------------------------------------------------------- shapes and parts
    @property
    def d_in(self) -> int:
        return self.W_l.shape[0]

    @property
    def d_mlp(self) -> int:
        return self.W_l.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_out.shape[1] if self.W_out is not None else self.d_mlp

    @property
    def dtype(self) -> torch.dtype:
        return self.W_l.dtype

    @property
    def device(self) -> torch.device:
        return self.W_l.device

    @property
    def has_bias(self) -> bool:
        """True if any of b_l, b_r, b_out is given (even if zero)."""
        return any(b is not None for b in (self.b_l, self.b_r, self.b_out))

    def __repr__(self) -> str:
        w_out = "identity" if self.W_out is None else f"[{self.d_mlp}, {self.d_out}]"
        # only the biases that are there and not all zero: an untrained (zero) bias changes nothing
        biases = [n for n in ("b_l", "b_r", "b_out") if getattr(self, n) is not None and bool(getattr(self, n).any())]
        return (
            f"BilinearTensor(d_in={self.d_in}, d_mlp={self.d_mlp}, d_out={self.d_out}, W_out={w_out}, "
            f"biases={biases}, dtype={self.dtype}, device={self.device})"
        )

    def to(self, *args, **kwargs) -> "BilinearTensor":
        """A copy with every weight moved/cast by ``Tensor.to(*args, **kwargs)`` (e.g. torch.float64)."""
        conv = [None if t is None else t.to(*args, **kwargs)
                for t in (self.W_l, self.W_r, self.W_out, self.b_l, self.b_r, self.b_out)]
        return BilinearTensor(*conv)

    def _bias(self, b: Tensor | None, n: int) -> Tensor:
        return b if b is not None else self.W_l.new_zeros(n)

    def augmented(self) -> "BilinearTensor":
        """B' over x' = [x, 1]: W_l' = [W_l; b_l], W_r' = [W_r; b_r], so MLP(x) = B'(x',x') + b_out (§1.2)."""
        W_l = torch.cat([self.W_l, self._bias(self.b_l, self.d_mlp)[None]], dim=0)
        W_r = torch.cat([self.W_r, self._bias(self.b_r, self.d_mlp)[None]], dim=0)
        return BilinearTensor(W_l, W_r, self.W_out, b_out=self.b_out)

    @property
    def interaction_part(self) -> "BilinearTensor":
        """The bias-free quadratic part B = B'[:, :d, :d] (same weights, no biases)."""
        return BilinearTensor(self.W_l, self.W_r, self.W_out)

    @property
    def linear_part(self) -> Float[Tensor, "d_out d_in"]:
        """Lin[o,i] = Σ_k W_out[k,o] (W_l[i,k] b_r[k] + b_l[k] W_r[i,k]) = B'[o,i,d] + B'[o,d,i]."""
        m = self.d_mlp
        mixed = self.W_l * self._bias(self.b_r, m) + self.W_r * self._bias(self.b_l, m)  # [d_in, d_mlp]
        return self._project(mixed).T

    @property
    def constant_part(self) -> Float[Tensor, " d_out"]:
        """c[o] = Σ_k W_out[k,o] b_l[k] b_r[k] = B'[o,d,d] (b_out is not included)."""
        return self._project(self._bias(self.b_l, self.d_mlp) * self._bias(self.b_r, self.d_mlp))

    def _project(self, h: Tensor) -> Tensor:
        return h if self.W_out is None else h @ self.W_out

    # ---------------------------------------------------------------- evaluation
    def __call__(
        self, x: Float[Tensor, "*bx d_in"], y: Float[Tensor, "*by d_in"] | None = None
    ) -> Float[Tensor, "*b d_out"]:
        """Ordered B(x, y) = ((x W_l) ⊙ (y W_r)) W_out, batched over broadcast leading dims; B(x, x) if y is None.

        Note B(x,y) ≠ B(y,x) in general: the ordered value carries the arbitrary antisymmetric part
        (§1.3). Use ``sym`` for unordered pair terms.
        """
        check_input("x", x, self.d_in, self.W_l, "d_in")
        y = x if y is None else check_input("y", y, self.d_in, self.W_l, "d_in")
        return evaluate(self.W_l, self.W_r, self.W_out, x, y)

    def sym(self, x: Float[Tensor, "*bx d_in"], y: Float[Tensor, "*by d_in"]) -> Float[Tensor, "*b d_out"]:
        """B_sym(x, y) = ½(B(x,y) + B(y,x)), the basis-invariant pair term."""
        return 0.5 * (self(x, y) + self(y, x))

    def mlp(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """The full layer with biases: ((x W_l + b_l) ⊙ (x W_r + b_r)) W_out + b_out."""
        check_input("x", x, self.d_in, self.W_l, "d_in")
        h = x @ self.W_l
        h = h + self.b_l if self.b_l is not None else h
        g = x @ self.W_r
        g = g + self.b_r if self.b_r is not None else g
        out = self._project(h * g)
        return out + self.b_out if self.b_out is not None else out

    def materialize(
        self, sym: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, chunk_size: int | None = None
    ) -> Float[Tensor, "d_out d_in d_in"]:
        """The dense tensor B[o,i,j] (or B_sym = ½(B + B.transpose(1, 2))), d_out·d_in² memory.

        Built in chunks over o, so the peak is the result plus one [chunk, d_in, d_mlp] buffer.

        Raises:
            MaterializeTooLargeError: the result would need more than ``max_bytes`` bytes.
        """
        size_guard("B_sym" if sym else "B", (self.d_out, self.d_in, self.d_in), self.dtype, max_bytes)
        D = self.W_out.T if self.W_out is not None else torch.eye(self.d_mlp, dtype=self.dtype, device=self.device)
        return contract_coeffs(self.W_l, self.W_r, D, sym=sym, chunk_size=chunk_size)


def _plain_unless_grad(fn):
    @functools.wraps(fn)
    def query(self, *args, **kwargs):
        if self.grad:
            return fn(self, *args, **kwargs)
        with torch.no_grad():
            return fn(self, *args, **kwargs)

    return query


# Every query that takes an input (a vector, a direction): an input that carries autograd history (say
# `model.W_U[:, t]`) must not turn the analysis result into a graph node.
for _name in ("__call__", "sym", "mlp", "neuron_coeffs", "interaction", "matvec", "trace", "frobenius_sq", "eig",
              "spectra", "hosvd"):
    setattr(BilinearTensor, _name, _plain_unless_grad(getattr(BilinearTensor, _name)))
