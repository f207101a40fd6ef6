"""Folded weights and frozen forward pass: the linear/bilinear model the path expansion runs on (spec §2.1, §3).

After folding, every norm is `N(v)_p = v_p C / σ_p` (C = centering for LN, identity for RMS or no norm),
and C together with the norm weight is folded into the matrices that *read* from the residual stream:

    W_V'' = C diag(w1) W_V      b_O' = b_O + Σ_h (b_V + b1 W_V)_h W_O_h    (b_V folded, rows of A sum to 1)
    W_l'' = C diag(w2) W_l      b_l' = b_l + b2 W_l      (same for r: an LN bias makes MLP biases)
    W_U'' = C diag(wf) W_U      b_U' = b_U + bf W_U

so a frozen head is `A (X / σ1) W_V'' W_O` and a frozen MLP reads `(X / σ2) W_l''`. The user's model is
never modified: the folding is done on fresh tensors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_bilinear.errors import InputError, NotBilinearError


@dataclass
class FoldedLayer:
    """One block's folded weights. MLP fields are None for attention-only models."""

    W_V: Float[Tensor, "n_heads d_model d_head"]
    W_O: Float[Tensor, "n_heads d_head d_model"]
    b_O: Float[Tensor, " d_model"]
    b_V: Float[Tensor, "n_heads d_head"]  # the value bias β = b_V + ln1.b W_V, folded into b_O above
    W_l: Optional[Float[Tensor, "d_model d_mlp"]] = None  # W_l'' (the model's own tensor when nothing folds in)
    W_r: Optional[Float[Tensor, "d_model d_mlp"]] = None
    b_l: Optional[Float[Tensor, " d_mlp"]] = None
    b_r: Optional[Float[Tensor, " d_mlp"]] = None
    W_out: Optional[Float[Tensor, "d_mlp d_model"]] = None
    b_out: Optional[Float[Tensor, " d_model"]] = None

    @property
    def has_mlp(self) -> bool:
        return self.W_out is not None

    @property
    def d_mlp(self) -> int:
        return self.W_out.shape[0]


@dataclass
class Folded:
    """Folded weights of the whole model (see the module docstring)."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_pos: Optional[Float[Tensor, "n_ctx d_model"]]
    layers: list[FoldedLayer]
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, " d_vocab"]
    center: bool  # LayerNorm-style centering is folded into the reading weights


def check_bilinear(model) -> None:
    """Refuse models whose MLPs are not bilinear (a SwiGLU layer is not a polynomial)."""
    cfg = model.cfg
    if not cfg.attn_only and cfg.gate is not None:
        raise NotBilinearError(
            f"the circuit extractor needs bilinear MLPs (cfg.gate=None), but every layer of this model has "
            f"gate={cfg.gate!r}: gate(x W_l) ⊙ (x W_r) is not a polynomial in its input, so its output has "
            "no exact expansion into path terms; use activation patching or attribution for gated models"
        )


def _norm_params(norm, d_model: int, dtype, device) -> tuple[Optional[Tensor], Tensor]:
    """(weight or None for a weightless norm, bias or zeros) of a norm, in `dtype`."""
    w = getattr(norm, "w", None) if norm is not None else None
    b = getattr(norm, "b", None) if norm is not None else None
    zeros = torch.zeros(d_model, dtype=dtype, device=device)
    return (None if w is None else w.to(dtype)), (zeros if b is None else b.to(dtype))


def _centers(norm) -> bool:
    """Whether `norm` (a block's ln1/ln2, ln_final, or None) subtracts the mean: LN and LNPre do."""
    return bool(getattr(norm, "center", False))


def _fold_rows(W: Tensor, w: Optional[Tensor], center: bool) -> Tensor:
    """C diag(w) W on the d_model axis (-2), with C = I - 11ᵀ/d when `center`. With no norm weight and no
    centering this is W itself, not a copy (a weightless RMS model folds without copying its matrices)."""
    if w is not None:
        W = W * w[:, None]
    return W - W.mean(dim=-2, keepdim=True) if center else W


@torch.no_grad()
def fold_weights(model, dtype: Optional[torch.dtype] = None) -> Folded:
    """Fold norms and value biases into the reading weights (the model is not touched: a weight is copied only
    where a norm weight, centering or a dtype change folds into it)."""
    cfg = model.cfg
    check_bilinear(model)
    check_dtype(dtype)
    dtype = dtype or cfg.dtype
    dev = model.W_E.device
    d = cfg.d_model
    center = cfg.normalization_type in ("LN", "LNPre")
    cast = lambda t: t.detach().to(dtype)  # noqa: E731
    layers = []
    for block in model.blocks:
        attn = block.attn
        w1, b1 = _norm_params(block.ln1, d, dtype, dev)
        W_V = cast(attn.W_V)
        b_V = cast(attn.b_V) + torch.einsum("d,hde->he", b1, W_V)
        W_O = cast(attn.W_O)
        layer = FoldedLayer(
            W_V=_fold_rows(W_V, w1, _centers(block.ln1)),
            W_O=W_O,
            b_O=cast(attn.b_O) + torch.einsum("he,hed->d", b_V, W_O),
            b_V=b_V,
        )
        if not cfg.attn_only:
            mlp = block.mlp
            w2, b2 = _norm_params(block.ln2, d, dtype, dev)
            W_l, W_r = cast(mlp.W_l), cast(mlp.W_r)
            c2 = _centers(block.ln2)
            layer.W_l, layer.W_r = _fold_rows(W_l, w2, c2), _fold_rows(W_r, w2, c2)
            layer.b_l = cast(mlp.b_l) + b2 @ W_l
            layer.b_r = cast(mlp.b_r) + b2 @ W_r
            layer.W_out = cast(mlp.W_out)
            layer.b_out = cast(mlp.b_out)
        layers.append(layer)
    wf, bf = _norm_params(model.ln_final, d, dtype, dev)
    W_U = cast(model.W_U)
    return Folded(
        W_E=cast(model.W_E),
        W_pos=cast(model.pos_embed.W_pos) if model.pos_embed is not None else None,
        layers=layers,
        W_U=_fold_rows(W_U, wf, _centers(model.ln_final)),
        b_U=cast(model.b_U) + bf @ W_U,
        center=center,
    )


@dataclass
class FrozenRun:
    """Everything the expansion freezes from one real forward pass, trimmed to the first `n` positions.

    Attributes:
        tokens: [batch, n]
        patterns: per layer [batch, n_heads, n, n] (A, rows sum to 1)
        scale1, scale2: per layer [batch, n, 1] (σ of ln1 / ln2; ones without a norm)
        scale_final: [batch, n, 1]
        logits: the real logits [batch, n, d_vocab]
        resid: real residual stream entering layer l, for l in 0..n_layers (the last is the final one)
        n_input: length of the input before trimming to `n` (negative target positions count from it)
        pass_dtype: dtype of the forward pass that `logits`, `resid`, patterns and scales come from
        model_dtype: the model's own dtype (differs from pass_dtype when a float64 pass of a float32
            model was run, see `freeze`)
    """

    tokens: Int[Tensor, "batch n"]
    folded: Folded
    patterns: list[Tensor]
    scale1: list[Tensor]
    scale2: list[Optional[Tensor]]
    scale_final: Tensor
    logits: Tensor
    resid: list[Tensor]
    n_heads: int
    extra: dict = field(default_factory=dict)  # cached hooks asked for with `extra_names`, trimmed like the rest
    n_input: Optional[int] = None
    pass_dtype: Optional[torch.dtype] = None
    model_dtype: Optional[torch.dtype] = None

    @property
    def n(self) -> int:
        return self.tokens.shape[1]

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.folded.layers)


def to_tokens(model, tokens) -> Tensor:
    """Accept a string (with a tokenizer), [pos] or [batch, pos] ids; return [batch, pos] long."""
    if isinstance(tokens, (str, list)):
        tokens = model.to_tokens(tokens)
    if not isinstance(tokens, Tensor):
        raise InputError(f"tokens must be a torch.Tensor or a string, got {type(tokens).__name__}")
    if tokens.ndim == 1:
        tokens = tokens[None]
    return tokens


def check_dtype(dtype) -> None:
    """Refuse a compute dtype that is not a real floating-point torch dtype (before anything is computed)."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch dtype such as torch.float64 or None (the model's), "
                         f"got {dtype!r}")


def _finer(dtype: Optional[torch.dtype], than: torch.dtype) -> bool:
    return dtype is not None and torch.finfo(dtype).eps < torch.finfo(than).eps


def upcast_copy(model, dtype: torch.dtype):
    """A copy of `model` in `dtype` (float32 → float64 is exact); the tokenizer is shared, not copied."""
    memo = {id(model.tokenizer): model.tokenizer} if getattr(model, "tokenizer", None) is not None else {}
    return copy.deepcopy(model, memo).to(dtype)


@torch.no_grad()
def freeze(model, tokens: Tensor, n_keep: Optional[int] = None, dtype: Optional[torch.dtype] = None,
           extra_names: tuple[str, ...] = ()) -> FrozenRun:
    """Run the model once with a cache and freeze patterns and norm scales.

    Args:
        n_keep: keep only the first n_keep positions (exact: the model is causal, later positions
            never influence earlier ones).
        dtype: compute the expansion in this dtype (e.g. float64 for a float32 model). When it is finer
            than the model's, the forward pass itself runs on a copy of the model in `dtype`, so patterns,
            norm scales, `extra` and the reference logits carry no float32 rounding and Σ terms matches
            that pass to float64 precision (the float32 model's own logits differ from it by its
            rounding, ~1e-7).
        extra_names: further hook names to cache; their values land in `run.extra` (positions trimmed
            to the first n_keep on the `pos` axis, axis 1).

    Raises:
        InputError: `dtype` is not a floating-point dtype.
    """
    check_dtype(dtype)
    cfg = model.cfg
    check_bilinear(model)
    model_dtype = cfg.dtype
    if _finer(dtype, model_dtype):
        model = upcast_copy(model, dtype)
        cfg = model.cfg
    folded = fold_weights(model, dtype)
    dtype = folded.W_E.dtype
    L = cfg.n_layers
    names = {"ln_final.hook_scale"} if model.ln_final is not None else set()
    for l in range(L):
        names |= {f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.hook_resid_pre"}
        if model.blocks[l].ln1 is not None:
            names.add(f"blocks.{l}.ln1.hook_scale")
        if not cfg.attn_only and model.blocks[l].ln2 is not None:
            names.add(f"blocks.{l}.ln2.hook_scale")
    if L:
        names.add(f"blocks.{L - 1}.hook_resid_post")
    names |= set(extra_names)
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.run_with_cache(tokens, names_filter=sorted(names))
    finally:
        model.train(was_training)
    n = tokens.shape[1] if n_keep is None else n_keep
    t = lambda name: cache[name][:, :n].to(dtype)  # noqa: E731
    ones = torch.ones(tokens.shape[0], n, 1, dtype=dtype, device=tokens.device)
    scale = lambda name, present: t(name) if present else ones  # noqa: E731
    patterns = [cache[f"blocks.{l}.attn.hook_pattern"][:, :, :n, :n].to(dtype) for l in range(L)]
    scale1 = [scale(f"blocks.{l}.ln1.hook_scale", model.blocks[l].ln1 is not None) for l in range(L)]
    scale2 = [None if cfg.attn_only else scale(f"blocks.{l}.ln2.hook_scale", model.blocks[l].ln2 is not None)
              for l in range(L)]
    resid = [t(f"blocks.{l}.hook_resid_pre") for l in range(L)]
    if L:
        resid.append(t(f"blocks.{L - 1}.hook_resid_post"))
    else:
        resid.append(model._embed(tokens)[:, :n].to(dtype))
    return FrozenRun(
        tokens=tokens[:, :n], folded=folded, patterns=patterns, scale1=scale1, scale2=scale2,
        scale_final=scale("ln_final.hook_scale", model.ln_final is not None), logits=logits[:, :n].to(dtype),
        resid=resid, n_heads=cfg.n_heads, extra={k: t(k) for k in extra_names},
        n_input=tokens.shape[1], pass_dtype=logits.dtype, model_dtype=model_dtype,
    )
