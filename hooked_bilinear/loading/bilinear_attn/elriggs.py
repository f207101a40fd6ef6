"""`Elriggs/bilinear_atnn_only_2L_Pile` (Logan Riggs' `AttentionLM`, trained by `tdooms/tensor-similarity`
`workspaces/logan/train_run_D_1k_ckpts.py`): attention-only bilinear attention with BatchNorm on q1/k1/q2/k2,
RoPE, and a LayerNorm before the unembedding. Layout: docs/spec/checkpoints.md §6.3.

    x = embed[tokens];   per layer: x += attn_scale · o(z),   z = A v,
    qi = rope(BN_qi(xᵀ Wqi + bqi)),  ki = rope(BN_ki(xᵀ Wki + bki))   (BN over the d_model channels, at eval)
    A = mask · (q1·k1)(q2·k2) / d_head²
    logits = unembed(final_norm(x))        final_norm: LayerNorm (default), RMSNorm or none (config norm_type)

At eval `BatchNorm1d` is the per-channel affine map `(y - running_mean) / sqrt(running_var + 1e-5) · weight + bias`,
folded exactly into the projection it follows (W_Qi, b_Qi, W_Ki, b_Ki); `attn_scale` is folded into W_O.
config.json is flat: {vocab_size, n_ctx, d_model, n_head, n_layers, attn_scale (1.0), rope_base (10000),
norm_type ('layernorm')}; the checkpoints are raw state dicts `checkpoints/step_NNNNNN.pt`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.bilinear_attn._heads import per_head_in, per_head_out
from hooked_bilinear.loading.formats._base import Converted, TensorReader, config_value

NAME = "elriggs-attentionlm"
MARKER = "layers.0.bn_q1.running_mean"
COMPILED = "_orig_mod."  # the prefix torch.compile's wrapper puts on every state-dict key
BN_EPS = 1e-5  # nn.BatchNorm1d default
LN_EPS = 1e-5  # nn.LayerNorm default
NORM_TYPES = ("layernorm", "rmsnorm", "none")
QK = ("q1", "k1", "q2", "k2")
DEFAULT_N_CTX = 512  # the training length (RoPE tables and the mask are not stored, so any length works)


def matches(state: dict[str, Tensor], config: dict[str, Any]) -> bool:
    return MARKER in state or COMPILED + MARKER in state


def _uncompiled(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state dict without torch.compile's `_orig_mod.` prefix (only when every key has it)."""
    if state and all(k.startswith(COMPILED) for k in state):
        return {k[len(COMPILED):]: v for k, v in state.items()}
    return state


def _count_layers(state: dict[str, Tensor]) -> int:
    n = 0
    while f"layers.{n}.q1.weight" in state:
        n += 1
    return n


def read_config(config: dict[str, Any], state: dict[str, Tensor], source: str) -> dict[str, Any]:
    """The flat config.json, checked against the tensors (sizes, layer count, norm type, scale)."""
    if not config:
        raise CheckpointError(f"{source}: needs the repo's config.json (n_head is not recoverable from the tensors)")
    if isinstance(config.get("model"), dict):
        raise CheckpointError(f"{source}: config.json has a nested 'model' block (the melephant-attentionlm layout); "
                              f"the {NAME} config.json is flat: {{vocab_size, d_model, n_head, n_layers, ...}}")
    if "embed.weight" not in state:
        raise CheckpointError(f"{source}: missing tensor 'embed.weight' (the {NAME} layout has it)")
    V, d = state["embed.weight"].shape
    out = {key: config_value(config, key, int, source) for key in ("vocab_size", "d_model", "n_head", "n_layers")}
    for key, found in (("vocab_size", V), ("d_model", d), ("n_layers", _count_layers(state))):
        if out[key] != found:
            raise CheckpointError(f"{source}: config.json {key}={out[key]} but the tensors have {found} "
                                  f"({'layers.{i}.q1.weight' if key == 'n_layers' else 'embed.weight'})")
    if d % out["n_head"]:
        raise CheckpointError(f"{source}: d_model={d} is not divisible by config.json n_head={out['n_head']}")
    out["n_ctx"] = config_value(config, "n_ctx", int, source, default=None)
    for key, default in (("attn_scale", 1.0), ("rope_base", 10000.0)):
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise CheckpointError(f"{source}: config.json {key}={value!r}, expected a positive number")
        out[key] = float(value)
    out["norm_type"] = config.get("norm_type", "layernorm")
    if out["norm_type"] not in NORM_TYPES:
        raise CheckpointError(f"{source}: config.json norm_type={out['norm_type']!r}: this loader maps only "
                              f"{NORM_TYPES} (AttentionLM's final_norm before the unembedding)")
    return out


def _fold_batchnorm(r: TensorReader, prefix: str, W: Tensor, b: Tensor, source: str) -> tuple[Tensor, Tensor]:
    """(W', b') of `BN(x Wᵀ + b)` at eval: `s = γ / sqrt(var + eps)`, `W' = s ⊙ W` (rows), `b' = (b - μ) s + β`."""
    d = W.shape[0]
    gamma, beta = r.take(prefix + "weight", (d,)).double(), r.take(prefix + "bias", (d,)).double()
    mean, var = r.take(prefix + "running_mean", (d,)).double(), r.take(prefix + "running_var", (d,)).double()
    tracked = r.tensors.pop(prefix + "num_batches_tracked", None)
    if tracked is not None and (tracked.numel() != 1 or tracked.is_floating_point()):
        raise CheckpointError(f"{source}: tensor {prefix + 'num_batches_tracked'!r} should be an integer scalar, "
                              f"got shape {tuple(tracked.shape)} dtype {tracked.dtype}")
    if bool((var < 0).any()):
        raise CheckpointError(f"{source}: tensor {prefix + 'running_var'!r} has negative entries (a variance is >= 0)")
    s = gamma / torch.sqrt(var + BN_EPS)
    return W.double() * s[:, None], (b.double() - mean) * s + beta  # float64: build_model rounds once, to cfg.dtype


def convert(state: dict[str, Tensor], config: dict[str, Any], source: str, *, n_ctx=None, rotary_base=None,
            device: str = "cpu", dtype: Any = "float32", name: str = NAME) -> Converted:
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    state = _uncompiled(state)
    c = read_config(config, state, source)
    V, d, H, L = c["vocab_size"], c["d_model"], c["n_head"], c["n_layers"]
    e = d // H
    r = TensorReader(state, source)
    W_E = r.take("embed.weight", (V, d))
    out = {"embed.W_E": W_E}
    for i in range(L):
        p, q = f"layers.{i}.", f"blocks.{i}.attn."
        for theirs in QK:
            W = r.take(p + f"{theirs}.weight", (d, d))
            b = r.take_optional(p + f"{theirs}.bias", (d,))  # nn.Linear(bias=False) in the no-bias runs
            W, b = _fold_batchnorm(r, p + f"bn_{theirs}.", W, W.new_zeros(d) if b is None else b, source)  # float64
            ours = theirs.upper()
            out[q + f"W_{ours}"] = per_head_in(W, H)
            out[q + f"b_{ours}"] = b.view(H, e)
        out[q + "W_V"] = per_head_in(r.take(p + "v.weight", (d, d)), H)
        out[q + "b_V"] = W_E.new_zeros(H, e)
        out[q + "W_O"] = per_head_out(r.take(p + "o.weight", (d, d)).double(), H) * c["attn_scale"]
        out[q + "b_O"] = W_E.new_zeros(d)
    norm = {"layernorm": "LN", "rmsnorm": "RMS", "none": None}[c["norm_type"]]
    if norm is not None:
        out["ln_final.w"] = r.take("final_norm.weight", (d,))
    if norm == "LN":
        out["ln_final.b"] = r.take("final_norm.bias", (d,))
    W_U = r.take("unembed.weight", (V, d))
    out["unembed.W_U"], out["unembed.b_U"] = W_U.T, W_U.new_zeros(V)
    r.finish()
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."), None)
    torch_dtype = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32  # a bad name: the config says so
    # nn.RMSNorm(eps=None) uses the input dtype's machine epsilon
    eps = torch.finfo(torch_dtype).eps if norm == "RMS" else LN_EPS
    cfg = HookedBilinearConfig(
        n_layers=L, d_model=d, n_heads=H, d_head=e, d_vocab=V, n_ctx=n_ctx or c["n_ctx"] or DEFAULT_N_CTX,
        attn_only=True, attention="bilinear", attn_scale=float(e * e), normalization_type=norm,
        final_norm_only=norm is not None, eps=eps, positional_embedding_type="rotary", rotary_dim=e,
        rotary_base=float(rotary_base or c["rope_base"]), attn_bias=True, unembed_bias=False,
        model_name=name, device=device, dtype=dtype,
    )
    return Converted(HookedBilinearTransformer, cfg, out)
