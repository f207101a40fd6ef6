"""Independent reference forwards, written from checkpoints.md with plain torch ops on the raw tensors.

They share no code with hooked_bilinear: the loader's conversions are checked against these.
Computed in float64 so the comparison measures the hooked model's float32 error only.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

GATES = {None: lambda x: x, "silu": F.silu, "relu": F.relu, "gelu": F.gelu}


def raw(folder) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in load_file(f"{folder}/model.safetensors").items()}


def rms(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x [batch, head, pos, d_head], half-split convention, cos/sin from cat(freqs, freqs)."""
    e, n = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / base ** (torch.arange(0, e, 2, dtype=torch.float64) / e)
    freqs = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def attention(x, T, i: int, n_head: int, use_rope: bool = True) -> torch.Tensor:
    b, n, d = x.shape
    e = d // n_head
    p = f"transformer.h.{i}.attn"
    qkv = x @ T[f"{p}.qkv.weight"].T
    if f"{p}.qkv.bias" in T:
        qkv = qkv + T[f"{p}.qkv.bias"]
    q, k, v = qkv.view(b, n, 3, n_head, e).permute(2, 0, 3, 1, 4)  # (n n_head d_head) rows
    if use_rope:
        q, k = rope(q), rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(e)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    z = (pattern @ v).transpose(1, 2).reshape(b, n, d)  # (n_head d_head) columns
    return z @ T[f"{p}.o.weight"].T


def bilinear_mlp(x, w, p, w_bias=None, p_bias=None, gate: Optional[str] = None) -> torch.Tensor:
    h = w.shape[0] // 2
    pre = x @ w.T + (0 if w_bias is None else w_bias)
    left, right = pre[..., :h], pre[..., h:]
    out = (GATES[gate](left) * right) @ p.T
    return out + (0 if p_bias is None else p_bias)


def forward_2024_10(config: dict, T: dict, tokens: torch.Tensor, scale: Optional[bool] = None) -> torch.Tensor:
    """§1: x += s * attn(N(x)); x += mlp(N(x)); logits = lm_head(N(x))."""
    L = config["n_layer"]
    apply = config.get("scale_attn", True) if scale is None else scale
    s = 1 / math.sqrt(2 * L) if apply else 1.0
    N = rms if config["normalization"] else (lambda x: x)
    x = T["transformer.wte.weight"][tokens]
    for i in range(L):
        x = x + s * attention(N(x), T, i, config["n_head"])
        m = f"transformer.h.{i}.mlp"
        x = x + bilinear_mlp(N(x), T[f"{m}.w.weight"], T[f"{m}.p.weight"], T.get(f"{m}.w.bias"),
                             T.get(f"{m}.p.bias"), config["gate"])
    return N(x) @ T["lm_head.weight"].T


def _old_norm(config: dict, T: dict, name: str):
    kind = config["normalization"]
    w, b = T.get(f"{name}.norm.weight"), T.get(f"{name}.norm.bias")
    if kind == "rms":
        return lambda x: rms(x) * w + (0 if b is None else b)
    if kind == "ln":  # nn.LayerNorm(d_model, norm_bias): eps = float(norm_bias)
        return lambda x: F.layer_norm(x, (x.shape[-1],), w, b, eps=float(config["norm_bias"]))
    return lambda x: x


def forward_2024_06(config: dict, T: dict, tokens: torch.Tensor) -> torch.Tensor:
    """§2: no attention-output scale, norms with weights, mlp.o, blp/glp."""
    gate = {"blp": None, "glp": "gelu"}[config["mlp"]]
    learned = "transformer.wpe.weight" in T
    x = T["transformer.wte.weight"][tokens]
    if learned:
        x = x + T["transformer.wpe.weight"][: tokens.shape[-1]]
    for i in range(config["n_layer"]):
        x = x + attention(_old_norm(config, T, f"transformer.h.{i}.n1")(x), T, i, config["n_head"], not learned)
        m = f"transformer.h.{i}.mlp"
        x = x + bilinear_mlp(_old_norm(config, T, f"transformer.h.{i}.n2")(x), T[f"{m}.w.weight"],
                             T[f"{m}.o.weight"], T.get(f"{m}.w.bias"), None, gate)
    return _old_norm(config, T, "transformer.n_f")(x) @ T["lm_head.weight"].T


def forward_mnist(config: dict, T: dict, images: torch.Tensor) -> torch.Tensor:
    """§3: embed -> n_layer x (left ⊙ right) (+ residual) -> head."""
    x = images.double().flatten(1) @ T["embed.weight"].T
    for i in range(config["n_layer"]):
        y = bilinear_mlp(x, T[f"blocks.{i}.weight"], torch.eye(x.shape[-1], dtype=x.dtype), T.get(f"blocks.{i}.bias"))
        x = x + y if config["residual"] else y
    return x @ T["head.weight"].T
