"""Weight-only (input-independent) token-space circuits (spec §2.2 token-space form, §4).

Every circuit here uses the folded weights of `frozen.fold_weights` (norm weights and LN centering folded
into the reading matrices) and assumes every norm scale σ = 1: a weight-only view cannot know σ, which
only rescales per position (MLP pair terms by 1/(σf σ2²), heads by 1/σ1 at the source and 1/σf at the
destination; ranks, eigenvectors and signs do not depend on σ, spec §3). Biases and W_pos are left out.

    direct    W_E W_U''                                          [V, V]          FactoredMatrix
    OV        W_E W_V''^h W_O^h W_U''                            [H, V, V]       FactoredMatrix
    QK        W_E W_Q''^h R_δ W_K''^hᵀ W_Eᵀ  (δ = p − s, rotary)  [H, V, V]       FactoredMatrix
    MLP l     T[c,a,b] over two token sources, read by W_out W_U''
              same source (embed×embed, head×same head): TokenBilinear (symmetric; bigram diagonal, eig)
              two sources (embed×head, head×head'):      TokenPairTensor (ordered, 2·B_sym)
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from hooked_bilinear._tl import FactoredMatrix
from hooked_bilinear.circuits.frozen import Folded, _centers, _fold_rows, _norm_params, fold_weights
from hooked_bilinear.circuits.token_pairs import TokenPairTensor
from hooked_bilinear.components.attention import rotate_half
from hooked_bilinear.errors import InputError, NotBilinearError
from hooked_bilinear.tensor import TokenBilinear

Source = Union[str, tuple[int, int]]


def _layer(model, layer: int) -> int:
    L = model.cfg.n_layers
    if not -L <= layer < L:
        raise IndexError(f"layer {layer} out of range for a model with n_layers={L}")
    return layer % L


def _heads(t: Tensor, head: Optional[int], n_heads: int) -> Tensor:
    if head is None:
        return t
    if not -n_heads <= head < n_heads:
        raise IndexError(f"head {head} out of range for n_heads={n_heads}")
    return t[head]


@torch.no_grad()
def direct_circuit(model) -> FactoredMatrix:
    """Token → logit through the residual stream alone: W_E W_U'' [d_vocab, d_vocab] (rank ≤ d_model)."""
    f = fold_weights(model)
    return FactoredMatrix(f.W_E, f.W_U)


@torch.no_grad()
def ov_circuit(model, layer: int, head: Optional[int] = None) -> FactoredMatrix:
    """Source token → logit through head (layer, head)'s OV map: W_E W_V''^h W_O^h W_U'' ([H, V, V] if head is None)."""
    f, l = fold_weights(model), _layer(model, layer)
    L = f.layers[l]
    A = torch.einsum("vd,hde->hve", f.W_E, L.W_V)
    B = L.W_O @ f.W_U
    H = model.cfg.n_heads
    return FactoredMatrix(_heads(A, head, H), _heads(B, head, H))


def rotary_matrix(model, layer: int, offset: int) -> Tensor:
    """R_δ [d_head, d_head] with rot_p(q)·rot_s(k) = q R_{p−s} kᵀ (identity without rotary)."""
    attn = model.blocks[layer].attn
    d_head = model.cfg.d_head
    eye = torch.eye(d_head, dtype=attn.W_Q.dtype, device=attn.W_Q.device)
    if not getattr(attn, "rotary", False):
        return eye
    if not 0 <= offset < model.cfg.n_ctx:
        raise InputError(f"offset (query pos − key pos) must be in [0, n_ctx={model.cfg.n_ctx}), got {offset}")
    r = model.cfg.rotary_dim
    cos, sin = (t[offset] for t in attn.rotary_tables(offset + 1, eye.device, eye.dtype))
    rot = eye[:, :r] * cos + rotate_half(eye[:, :r]) * sin
    return torch.cat([rot, eye[:, r:]], dim=1)


@torch.no_grad()
def qk_circuit(model, layer: int, head: Optional[int] = None, offset: int = 0) -> FactoredMatrix:
    """Query token × key token attention score (before 1/attn_scale): W_E W_Q''^h R_δ W_K''^hᵀ W_Eᵀ.

    Args:
        offset: δ = query position − key position; only matters with rotary embeddings (R_0 = I).
    """
    l = _layer(model, layer)
    attn, cfg = model.blocks[l].attn, model.cfg
    w1, _ = _norm_params(model.blocks[l].ln1, cfg.d_model, attn.W_Q.dtype, attn.W_Q.device)
    center = _centers(model.blocks[l].ln1)
    W_Q = _fold_rows(attn.W_Q, w1, center)
    W_K = _fold_rows(attn.W_K, w1, center)
    R = rotary_matrix(model, l, offset)
    Q = torch.einsum("vd,hde,ef->hvf", model.W_E, W_Q, R)
    K = torch.einsum("vd,hde->hev", model.W_E, W_K)
    H = cfg.n_heads
    return FactoredMatrix(_heads(Q, head, H), _heads(K, head, H))


def source_map(f: Folded, source: Source, layer: int, n_heads: int) -> tuple[Tensor, str]:
    """Token map [V, d_model] of a residual source: "embed" → W_E; (l, h) → W_E W_V''^{l,h} W_O^{l,h}."""
    if source == "embed":
        return f.W_E, "embed"
    if isinstance(source, tuple) and len(source) == 2:
        l, h = source
        if not (0 <= l <= layer and 0 <= h < n_heads):
            raise InputError(f"head source {source} must have layer in [0, {layer}] and head in [0, {n_heads})")
        L = f.layers[l]
        return f.W_E @ L.W_V[h] @ L.W_O[h], f"head{l}.{h}"
    raise InputError(f"a token source is 'embed' or a (layer, head) tuple, got {source!r}")


@torch.no_grad()
def mlp_token_tensor(model, layer: int, left: Source = "embed", right: Optional[Source] = None
                     ) -> Union[TokenBilinear, TokenPairTensor]:
    """Token-space tensor of MLP `layer` for inputs from `left` and `right` (spec §4).

    Same source (right None or equal to left): a `TokenBilinear` T_sym[c,a,b] = W_U''[:,c]·B_sym(x_a, x_b),
    with `bigram_diagonal()` (what direct×direct paths use), `pair_logits`, `row`, `interaction(c)`,
    `top_pairs(c, k)` (chunked) and `eig(c)` (eigenvectors mapped to tokens). Two sources: a
    `TokenPairTensor` T[c,a,b] = W_U''[:,c]·2B_sym(x_a, y_b), the unordered cross term. Neither forms V³.

    Args:
        left, right: "embed" (the direct path) or (l, h), a head's OV output of the embedding (l ≤ layer).

    Raises:
        NotBilinearError: gated or attention-only model.

    Example:
        >>> ee = mlp_token_tensor(model, 0)                   # embed × embed
        >>> ee.bigram_diagonal()[a, c]                         # T[c, a, a]
        >>> eh = mlp_token_tensor(model, 0, "embed", (0, 1))   # current token × token moved by head 0.1
    """
    if model.cfg.attn_only:
        raise NotBilinearError("this model is attention-only: it has no bilinear MLP tensors")
    f, l = fold_weights(model), _layer(model, layer)
    L, H = f.layers[l], model.cfg.n_heads
    W_l, W_r = L.W_l, L.W_r
    E1, n1 = source_map(f, left, l, H)
    if right is None or right == left:
        return TokenBilinear.from_weights(E1, W_l, W_r, L.W_out, f.W_U)
    E2, n2 = source_map(f, right, l, H)
    return TokenPairTensor(E1, E2, W_l, W_r, L.W_out @ f.W_U, names=(n1, n2))
