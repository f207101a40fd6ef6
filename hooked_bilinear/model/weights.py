"""Stacked weight accessors in TransformerLens orientation (`model.W_Q` -> [n_layers, n_heads, d_model, d_head])."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear._tl import FactoredMatrix


_SOFTMAX_ONLY = ("W_Q", "W_K", "b_Q", "b_K")
_BILINEAR_ONLY = ("W_Q1", "W_K1", "W_Q2", "W_K2", "b_Q1", "b_K1", "b_Q2", "b_K2")


def _stack(model, path: str) -> Tensor:
    first, attr = path.split(".")
    if first == "mlp" and model.cfg.attn_only:
        raise AttributeError(f"attn_only model has no MLP weight {attr!r}")
    kind = getattr(model.cfg, "attention", "softmax")
    if (attr in _SOFTMAX_ONLY and kind != "softmax") or (attr in _BILINEAR_ONLY and kind != "bilinear"):
        other = "W_Q1, W_K1, W_Q2, W_K2" if kind == "bilinear" else "W_Q, W_K"
        raise AttributeError(f"a model with attention={kind!r} has no {attr!r}; its query/key weights are {other}")
    return torch.stack([getattr(getattr(block, first), attr) for block in model.blocks], dim=0)


class WeightAccessors:
    """Mixin giving the model TL's weight properties. Each returns a fresh stacked tensor (a view for embeddings)."""

    def __getattr__(self, name: str):
        # A property raising AttributeError ("attn_only model has no MLP weight 'W_l'") makes Python
        # fall back to nn.Module.__getattr__, whose generic "has no attribute" message hides the reason.
        try:
            return super().__getattr__(name)
        except AttributeError:
            prop = getattr(type(self), name, None)
            if isinstance(prop, property):
                prop.fget(self)  # raises the property's own, explanatory AttributeError
            raise

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        if self.pos_embed is None:
            raise AttributeError(f"positional_embedding_type={self.cfg.positional_embedding_type!r} has no W_pos")
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        return self.unembed.b_U

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return _stack(self, "attn.W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return _stack(self, "attn.b_O")

    # ---- softmax-free bilinear attention (cfg.attention == "bilinear"): two query/key pairs per head
    @property
    def W_Q1(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_Q1")

    @property
    def W_K1(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_K1")

    @property
    def W_Q2(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_Q2")

    @property
    def W_K2(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return _stack(self, "attn.W_K2")

    @property
    def b_Q1(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_Q1")

    @property
    def b_K1(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_K1")

    @property
    def b_Q2(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_Q2")

    @property
    def b_K2(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return _stack(self, "attn.b_K2")

    @property
    def W_l(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return _stack(self, "mlp.W_l")

    @property
    def W_r(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return _stack(self, "mlp.W_r")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return _stack(self, "mlp.W_out")

    @property
    def b_l(self) -> Float[Tensor, "n_layers d_mlp"]:
        return _stack(self, "mlp.b_l")

    @property
    def b_r(self) -> Float[Tensor, "n_layers d_mlp"]:
        return _stack(self, "mlp.b_r")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return _stack(self, "mlp.b_out")

    # TransformerLens GatedMLP names: W_gate is the left branch, W_in the right.
    W_gate = W_l
    W_in = W_r
    b_in = b_r

    @property
    def OV(self) -> FactoredMatrix:
        """`W_V W_O` per layer and head: FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """`W_Q W_Kᵀ` per layer and head: FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def QK1(self) -> FactoredMatrix:
        """Bilinear attention, first factor: `W_Q1 W_K1ᵀ` per layer and head, [n_layers, n_heads, d_model, d_model].

        `scores1[p, q] = x̃_p QK1 x̃_qᵀ` (plus bias terms) without rotary; with RoPE the form is
        position-dependent (`R_p W_Q1 (R_q W_K1)ᵀ`). TL FactoredMatrix: `.svd()`, `.eigenvalues`, `.AB`.
        """
        return FactoredMatrix(self.W_Q1, self.W_K1.transpose(-2, -1))

    @property
    def QK2(self) -> FactoredMatrix:
        """Bilinear attention, second factor: `W_Q2 W_K2ᵀ` per layer and head (see `QK1`)."""
        return FactoredMatrix(self.W_Q2, self.W_K2.transpose(-2, -1))

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Float[Tensor, "d_model"]:
        """Sum of the biases written to the residual stream before `layer` (TL semantics).

        Args:
            layer: count the blocks `0..layer-1` in full.
            mlp_input: also count the attention bias `b_O` of block `layer`.
            include_mlp_biases: include each MLP's `b_out`.
        """
        total = torch.zeros(self.cfg.d_model, device=self.W_E.device, dtype=self.W_E.dtype)
        for block in self.blocks[:layer]:
            total = total + block.attn.b_O
            if include_mlp_biases and not self.cfg.attn_only:
                total = total + block.mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError(f"mlp_input=True needs layer < n_layers={self.cfg.n_layers}, got {layer}")
            total = total + self.blocks[layer].attn.b_O
        return total

    def tokens_to_residual_directions(self, tokens) -> Tensor:
        """Unembedding columns `W_U[:, token]` for a token id, a string, or a tensor of ids -> [..., d_model]."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if isinstance(tokens, int):
            return self.W_U[:, tokens]
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        return self.W_U.T[tokens]
