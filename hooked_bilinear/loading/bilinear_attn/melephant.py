"""`melephant/2l-bilinear-attn-normalised*` (`AttentionLM`, read by `tdooms/tensor-similarity`): attention-only
bilinear attention with RoPE and q/k biases, and a running-energy final norm. Layout: docs/spec/checkpoints.md
§"melephant AttentionLM".

    x = embed[tokens];   per layer: x += attn_scale · o(z),   z = A v,
    A = mask · (rope(q1)·rope(k1)) (rope(q2)·rope(k2)) / d_head²
    logits = unembed(x / sqrt(running_mean_energy + 1e-6))     (eval; the scale is folded into W_U)

config.json: {"model": {vocab_size, d_model, n_head, n_layers, attn_scale (0.35), use_bias_qk, attn_type}}.
Heads are the outer factor of each projection's `n_head·d_head` output axis.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.bilinear_attn._heads import per_head_in, per_head_out
from hooked_bilinear.loading.formats._base import Converted, TensorReader, config_value

NAME = "melephant-attentionlm"
MARKER = "layers.0.q1.weight"
FINAL_EPS = 1e-6
DEFAULT_N_CTX = 512


def matches(state: dict[str, Tensor], config: dict[str, Any]) -> bool:
    return MARKER in state


def model_config(config: dict[str, Any], source: str) -> dict[str, Any]:
    m = config.get("model", config)
    if not isinstance(m, dict):
        raise CheckpointError(f"{source}: config.json 'model' must be an object, got {type(m).__name__}")
    kind = m.get("attn_type", "bilinear")
    if kind != "bilinear":
        raise CheckpointError(
            f"{source}: config.json attn_type={kind!r}: this loader maps only attn_type='bilinear' "
            "(softmax-free A = (q1·k1)(q2·k2)/d_head²) onto HookedBilinearConfig(attention='bilinear')")
    return m


def final_scale(r: TensorReader, source: str) -> float:
    """1/sqrt(E + eps) of the final Tok0Batch norm at eval (its running energy E); 1 without the buffers."""
    energy = r.take_optional("final_norm.running_mean_energy", (1,))
    tracked = r.tensors.pop("final_norm.num_batches_tracked", None)
    if energy is None:
        return 1.0
    if tracked is not None and int(tracked) == 0:
        raise CheckpointError(
            f"{source}: final_norm.num_batches_tracked is 0, so at eval the final norm divides by the batch's own "
            "first-token energy, an input-dependent scale: refusing to fold it into the unembedding")
    return float((energy.double() + FINAL_EPS).rsqrt())


def convert(state: dict[str, Tensor], config: dict[str, Any], source: str, *, n_ctx=None, rotary_base=None,
            device: str = "cpu", dtype: Any = "float32", name: str = NAME) -> Converted:
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    m = model_config(config, source)
    if not config:
        raise CheckpointError(f"{source}: needs the repo's config.json (n_head is not recoverable from the tensors)")
    H = config_value(m, "n_head", int, source)
    L = config_value(m, "n_layers", int, source)
    scale = m.get("attn_scale", 0.35)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise CheckpointError(f"{source}: config.json attn_scale={scale!r}, expected a number")
    r = TensorReader(state, source)
    if "embed.weight" not in state:
        raise CheckpointError(f"{source}: missing tensor 'embed.weight' (the {NAME} layout has it)")
    V, d = state["embed.weight"].shape
    W_E = r.take("embed.weight", (V, d))
    if d % H:
        raise CheckpointError(f"{source}: d_model={d} is not divisible by n_head={H}")
    e = d // H
    bias_qk = bool(m.get("use_bias_qk", "layers.0.q1.bias" in state))
    out = {"embed.W_E": W_E}
    for i in range(L):
        p, q = f"layers.{i}.", f"blocks.{i}.attn."
        for ours, theirs in (("Q1", "q1"), ("K1", "k1"), ("Q2", "q2"), ("K2", "k2"), ("V", "v")):
            out[q + f"W_{ours}"] = per_head_in(r.take(p + f"{theirs}.weight", (d, d)), H)
            b = r.take(p + f"{theirs}.bias", (d,)) if (bias_qk and ours != "V") else W_E.new_zeros(d)
            out[q + f"b_{ours}"] = b.view(H, e)
        out[q + "W_O"] = per_head_out(r.take(p + "o.weight", (d, d)), H) * scale
        out[q + "b_O"] = W_E.new_zeros(d)
    s = final_scale(r, source)
    W_U = r.take("unembed.weight", (V, d))
    out["unembed.W_U"] = (W_U.double() * s).to(W_U.dtype).T
    out["unembed.b_U"] = W_U.new_zeros(V)
    r.finish()
    cfg = HookedBilinearConfig(
        n_layers=L, d_model=d, n_heads=H, d_head=e, d_vocab=V, n_ctx=n_ctx or m.get("n_ctx", DEFAULT_N_CTX),
        attn_only=True, attention="bilinear", attn_scale=float(e * e), normalization_type=None,
        positional_embedding_type="rotary", rotary_dim=e, rotary_base=float(rotary_base or m.get("rope_base", 10000.0)),
        attn_bias=bias_qk, unembed_bias=False, model_name=name, device=device, dtype=dtype,
    )
    return Converted(HookedBilinearTransformer, cfg, out)

