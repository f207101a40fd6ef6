"""`henrylhale/bilinear-vpd` (phase1 `BilinearTransformer`): single-head bilinear attention, bilinear MLPs,
learnable per-channel scales as the only norm, no biases. Layout: docs/spec/checkpoints.md §"bilinear-vpd".

    x = embed[tokens]
    x += o( A · v ),  A = mask · (rope(q1)·rope(k1)/√e) (rope(q2)·rope(k2)/√e),   on s_attn ⊙ x
    x += w_proj( w_m(s_mlp ⊙ x) ⊙ w_n(s_mlp ⊙ x) )
    logits = unembed(s_final ⊙ x)

RoPE: half-split, inv_freq = base^(-i/(e/2)), all e dims; `nn.Linear` weights are [out, in].
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.formats._base import Converted, TensorReader

NAME = "bilinear-vpd"
MARKER = "blocks.0.attn.q1_proj.weight"
DEFAULT_N_CTX = 64  # phase1's seq_len: RoPE tables are not stored, so any length works


def matches(state: dict[str, Tensor], config: dict[str, Any]) -> bool:
    return MARKER in state


def _count_layers(state: dict[str, Tensor]) -> int:
    n = 0
    while f"blocks.{n}.attn.q1_proj.weight" in state:
        n += 1
    return n


def convert(state: dict[str, Tensor], config: dict[str, Any], source: str, *, n_ctx=None, rotary_base=None,
            device: str = "cpu", dtype: Any = "float32", name: str = NAME) -> Converted:
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    L = _count_layers(state)
    for key in ("embed.weight", "blocks.0.mlp.w_m.weight"):
        if key not in state:
            raise CheckpointError(f"{source}: missing tensor {key!r} (the {NAME} layout has it)")
    V, d = state["embed.weight"].shape
    e = state[MARKER].shape[0]
    m = state["blocks.0.mlp.w_m.weight"].shape[0]
    r = TensorReader(state, source)
    out = {"embed.W_E": r.take("embed.weight", (V, d))}
    for i in range(L):
        p = q = f"blocks.{i}."  # same prefix, different leaf names
        for ours, theirs in (("Q1", "q1"), ("K1", "k1"), ("Q2", "q2"), ("K2", "k2"), ("V", "v")):
            out[q + f"attn.W_{ours}"] = r.take(p + f"attn.{theirs}_proj.weight", (e, d)).T[None]
            out[q + f"attn.b_{ours}"] = out["embed.W_E"].new_zeros(1, e)
        out[q + "attn.W_O"] = r.take(p + "attn.o_proj.weight", (d, e)).T[None]
        out[q + "attn.b_O"] = out["embed.W_E"].new_zeros(d)
        out[q + "ln1.w"] = r.take(p + "norm_attn.scale", (d,))
        out[q + "ln2.w"] = r.take(p + "norm_mlp.scale", (d,))
        out[q + "mlp.W_l"] = r.take(p + "mlp.w_m.weight", (m, d)).T
        out[q + "mlp.W_r"] = r.take(p + "mlp.w_n.weight", (m, d)).T
        out[q + "mlp.W_out"] = r.take(p + "mlp.w_proj.weight", (d, m)).T
        for b, size in (("b_l", m), ("b_r", m), ("b_out", d)):
            out[q + f"mlp.{b}"] = out["embed.W_E"].new_zeros(size)
    out["ln_final.w"] = r.take("final_norm.scale", (d,))
    W_U = r.take("unembed.weight", (V, d))
    out["unembed.W_U"], out["unembed.b_U"] = W_U.T, W_U.new_zeros(V)
    r.finish()
    cfg = HookedBilinearConfig(
        n_layers=L, d_model=d, n_heads=1, d_head=e, d_mlp=m, d_vocab=V, n_ctx=n_ctx or DEFAULT_N_CTX,
        attention="bilinear", attn_scale=float(e), normalization_type="Scale",
        positional_embedding_type="rotary", rotary_dim=e, rotary_base=float(rotary_base or 10000.0),
        attn_bias=False, mlp_bias=False, unembed_bias=False, model_name=name, device=device, dtype=dtype,
    )
    return Converted(HookedBilinearTransformer, cfg, out)
