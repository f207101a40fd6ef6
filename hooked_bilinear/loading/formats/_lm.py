"""Pieces shared by the two language-model formats of Dooms et al. (2024-06 and 2024-10).

Both store nn.Linear weights as [out, in]; ours are input-first (`x @ W`), so every matrix is
transposed. The conversions below return views of the checkpoint's tensors where they can, so
loading does not copy the weights a second time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.formats._base import TensorReader, config_value

ROTARY_BASE = 10000.0


def lm_sizes(config: dict[str, Any], source: str) -> dict[str, int]:
    """n_layers, n_heads, d_model, d_head, d_mlp, n_ctx from the shared config keys."""
    sizes = {
        "n_layers": config_value(config, "n_layer", int, source),
        "n_heads": config_value(config, "n_head", int, source),
        "d_model": config_value(config, "d_model", int, source),
        "d_mlp": config_value(config, "d_hidden", int, source),
        "n_ctx": config_value(config, "n_ctx", int, source),
    }
    if sizes["d_model"] % sizes["n_heads"]:
        raise CheckpointError(f"{source}: d_model={sizes['d_model']} is not divisible by n_head={sizes['n_heads']}")
    sizes["d_head"] = sizes["d_model"] // sizes["n_heads"]
    return sizes


def attention_scale(n_layers: int, apply: bool) -> float:
    """The residual scale `s = 1/sqrt(2 n_layers)` on the attention output, or 1."""
    return (2 * n_layers) ** -0.5 if apply else 1.0


def read_embeddings(r: TensorReader, d_model: int) -> tuple[Tensor, Tensor]:
    """`W_E [V, d]` from `transformer.wte.weight` and `W_U [d, V]` from `lm_head.weight` (V from wte)."""
    if not r.has("transformer.wte.weight"):
        raise CheckpointError(f"{r.source}: missing tensor 'transformer.wte.weight' (the token embedding)")
    d_vocab = r.tensors["transformer.wte.weight"].shape[0]
    W_E = r.take("transformer.wte.weight", (d_vocab, d_model))
    W_U = r.take("lm_head.weight", (d_vocab, d_model)).T
    return W_E, W_U


def read_attention(r: TensorReader, layer: int, n_heads: int, d_head: int, scale: float, qkv_bias: bool,
                   rotary: bool) -> dict[str, Tensor]:
    """W_Q/W_K/W_V [h, d, e], W_O [h, e, d] (times `scale`) and biases of block `layer`.

    `qkv.weight [3d, d]` has rows `(n n_head d_head)` with n = q, k, v; `o.weight [d, d]` has input
    columns `(n_head d_head)`.
    """
    h, e = n_heads, d_head
    d = h * e
    p = f"transformer.h.{layer}.attn"
    qkv = r.take(f"{p}.qkv.weight", (3 * d, d))
    W_Q, W_K, W_V = (qkv[n * d:(n + 1) * d].view(h, e, d).transpose(1, 2) for n in range(3))
    o = r.take(f"{p}.o.weight", (d, d))
    W_O = (o.T * scale if scale != 1.0 else o.T).reshape(h, e, d)
    if qkv_bias:
        b = r.take(f"{p}.qkv.bias", (3 * d,))
        b_Q, b_K, b_V = (b[n * d:(n + 1) * d].reshape(h, e).clone() for n in range(3))
    else:
        b_Q, b_K, b_V = (torch.zeros(h, e, dtype=qkv.dtype) for _ in range(3))
    b_O = r.take_optional(f"{p}.o.bias", (d,))
    b_O = torch.zeros(d, dtype=qkv.dtype) if b_O is None else b_O * scale
    inv_freq = r.take_optional(f"{p}.rotary.inv_freq", (e // 2,))
    if inv_freq is not None:
        if not rotary:
            raise CheckpointError(f"{r.source}: {p}.rotary.inv_freq found in a model with learned positions")
        expected = 1.0 / ROTARY_BASE ** (torch.arange(0, e, 2, dtype=torch.float64) / e)
        if not torch.allclose(inv_freq.double(), expected, rtol=1e-4, atol=0):
            raise CheckpointError(
                f"{r.source}: {p}.rotary.inv_freq does not match RoPE base {ROTARY_BASE:g} with rotary dim "
                f"d_head={e} (first values {inv_freq[:3].tolist()}, expected {expected[:3].tolist()})"
            )
    a = f"blocks.{layer}.attn"
    return {f"{a}.W_Q": W_Q, f"{a}.W_K": W_K, f"{a}.W_V": W_V, f"{a}.W_O": W_O,
            f"{a}.b_Q": b_Q, f"{a}.b_K": b_K, f"{a}.b_V": b_V, f"{a}.b_O": b_O}


def read_mlp(r: TensorReader, layer: int, d_model: int, d_mlp: int, out_name: str, w_bias: bool,
             out_bias: bool) -> dict[str, Tensor]:
    """W_l, W_r [d, h] (rows 0..h-1 and h..2h-1 of `mlp.w.weight [2h, d]`), W_out [h, d] and biases.

    Args:
        out_name: the down projection's name, "p" (2024-10) or "o" (2024-06).
        w_bias: `mlp.w.bias [2h]` must be present.
        out_bias: `mlp.{out_name}.bias [d]` must be present (otherwise it is read when present).
    """
    h = d_mlp
    p = f"transformer.h.{layer}.mlp"
    w = r.take(f"{p}.w.weight", (2 * h, d_model))
    out = r.take(f"{p}.{out_name}.weight", (d_model, h))
    if w_bias:
        b = r.take(f"{p}.w.bias", (2 * h,))
        b_l, b_r = b[:h].clone(), b[h:].clone()
    else:
        b_l, b_r = torch.zeros(h, dtype=w.dtype), torch.zeros(h, dtype=w.dtype)
    b_out = r.take(f"{p}.{out_name}.bias", (d_model,)) if out_bias else r.take_optional(f"{p}.{out_name}.bias", (d_model,))
    m = f"blocks.{layer}.mlp"
    return {f"{m}.W_l": w[:h].T, f"{m}.W_r": w[h:].T, f"{m}.W_out": out.T, f"{m}.b_l": b_l, f"{m}.b_r": b_r,
            f"{m}.b_out": torch.zeros(d_model, dtype=w.dtype) if b_out is None else b_out}


def read_gate(value: Any, source: str):
    """`gate` null -> None (bilinear); "relu" / "silu" / "gelu" are kept (a GLU comparison model)."""
    if value in (None, "none", "None", False):
        return None
    if value not in ("relu", "silu", "gelu"):
        raise CheckpointError(f"{source}: config.json gate={value!r}, expected null, 'relu', 'silu' or 'gelu'")
    return value
