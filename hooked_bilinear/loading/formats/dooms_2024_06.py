"""The older language-model format (mid 2024): `tdooms/TinyStories-{L}-{d}[-mod]`, `MicroStories-*`.

config.json adds `n_vocab`, `mlp` ("blp" bilinear, "glp" GeLU-GLU, "mlp" plain GELU MLP),
`normalization` ("rms", "ln" or null), `norm_bias`, `mlp_bias`, `noise` and `modifier` (training
options with no effect at inference). The down projection is `mlp.o` (not `mlp.p`), and the norms
carry weights: `transformer.h.{i}.n1.norm.weight`, `n2.norm.weight`, `transformer.n_f.norm.weight`
(+ `.bias`). These models predate the attention-output scale: `s = 1` unless `scale_attn=True`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.formats._base import Converted, TensorReader, config_value
from hooked_bilinear.loading.formats._lm import (
    ROTARY_BASE, attention_scale, lm_sizes, read_attention, read_embeddings, read_mlp,
)

NAME = "dooms-2024-06"
GATES = {"blp": None, "glp": "gelu"}
RMS_EPS = 1e-8


def matches(config: dict[str, Any]) -> bool:
    return "n_vocab" in config and isinstance(config.get("mlp"), str)


def _norm_type(config: dict[str, Any], source: str) -> tuple[Optional[str], float]:
    normalization = config.get("normalization", "rms")
    if normalization == "rms":
        return "RMS", RMS_EPS
    if normalization == "ln":
        # The training code built `nn.LayerNorm(d_model, norm_bias)`, whose second positional
        # argument is eps: eps = float(norm_bias) (0.0 or 1.0), and the LN bias always exists.
        return "LN", float(bool(config.get("norm_bias", False)))
    if normalization is None:
        return None, RMS_EPS
    raise CheckpointError(f"{source}: config.json normalization={normalization!r}, expected 'rms', 'ln' or null")


def _read_norms(r: TensorReader, state: dict[str, Tensor], norm_type: str, n_layers: int, d_model: int) -> dict[str, Tensor]:
    """Norm weights into `state`; returns the RMS norm biases, which our RMSNorm lacks, to fold."""
    to_fold = {}
    names = [(f"transformer.h.{i}.n{j}.norm", f"blocks.{i}.ln{j}") for i in range(n_layers) for j in (1, 2)]
    for theirs, ours in names + [("transformer.n_f.norm", "ln_final")]:
        state[f"{ours}.w"] = r.take(f"{theirs}.weight", (d_model,))
        bias = r.take_optional(f"{theirs}.bias", (d_model,))
        if norm_type == "LN":
            state[f"{ours}.b"] = torch.zeros_like(state[f"{ours}.w"]) if bias is None else bias
        elif bias is not None:
            to_fold[ours] = bias
    return to_fold


def _fold_rms_biases(state: dict[str, Tensor], biases: dict[str, Tensor], n_layers: int) -> None:
    """`RMS(x) + b` feeds only linear maps, so `b` moves exactly into their biases: `b_X += b W_X`."""
    for i in range(n_layers):
        if f"blocks.{i}.ln1" in biases:
            b = biases[f"blocks.{i}.ln1"]
            for X in "QKV":
                key = f"blocks.{i}.attn.b_{X}"
                state[key] = state[key] + torch.einsum("d,hde->he", b, state[f"blocks.{i}.attn.W_{X}"])
        if f"blocks.{i}.ln2" in biases:
            b = biases[f"blocks.{i}.ln2"]
            for X in "lr":
                key = f"blocks.{i}.mlp.b_{X}"
                state[key] = state[key] + b @ state[f"blocks.{i}.mlp.W_{X}"]
    if "ln_final" in biases:
        state["unembed.b_U"] = state["unembed.b_U"] + biases["ln_final"] @ state["unembed.W_U"]


def convert(config: dict[str, Any], tensors: dict[str, Tensor], source: str, *, name: str,
            scale_attn: Optional[bool] = None, device: str = "cpu", dtype: Any = "float32") -> Converted:
    """Convert to a HookedBilinearTransformer's config and state dict.

    Args:
        config: the checkpoint's config.json.
        tensors: its raw tensors (names as in checkpoints.md §2).
        source: where they came from, for error messages.
        name: recorded as cfg.model_name.
        scale_attn: True applies `s = 1/sqrt(2 n_layer)` to the attention output (default: not).

    Raises:
        CheckpointError: a plain GELU MLP ("mlp"), unknown options, or missing / unknown /
            mis-shaped tensors (named).
    """
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    mlp = config["mlp"]
    if mlp == "mlp":
        raise CheckpointError(
            f"{source}: config.json mlp='mlp' (a plain GELU MLP with bias): this architecture is not "
            f"supported, HookedBilinearTransformer only represents bilinear ('blp') and GLU ('glp') MLPs"
        )
    if mlp not in GATES:
        raise CheckpointError(f"{source}: config.json mlp={mlp!r}, expected 'blp' or 'glp' ('mlp' is unsupported)")
    s = lm_sizes(config, source)
    n_vocab = config_value(config, "n_vocab", int, source)
    mlp_bias = config_value(config, "mlp_bias", bool, source, default=False)
    norm_type, eps = _norm_type(config, source)
    scale = attention_scale(s["n_layers"], bool(scale_attn))

    r = TensorReader(tensors, source)
    W_E, W_U = read_embeddings(r, s["d_model"])
    if W_E.shape[0] != n_vocab:
        raise CheckpointError(f"{source}: transformer.wte.weight has {W_E.shape[0]} rows but config.json n_vocab={n_vocab}")
    state = {"embed.W_E": W_E, "unembed.W_U": W_U, "unembed.b_U": W_U.new_zeros(n_vocab)}
    learned_pos = r.has("transformer.wpe.weight")
    if learned_pos:
        state["pos_embed.W_pos"] = r.take("transformer.wpe.weight", (s["n_ctx"], s["d_model"]))
    for i in range(s["n_layers"]):
        state.update(read_attention(r, i, s["n_heads"], s["d_head"], scale, qkv_bias=False, rotary=not learned_pos))
        state.update(read_mlp(r, i, s["d_model"], s["d_mlp"], "o", w_bias=mlp_bias, out_bias=False))
    biases = _read_norms(r, state, norm_type, s["n_layers"], s["d_model"]) if norm_type else {}
    r.finish()
    _fold_rms_biases(state, biases, s["n_layers"])

    cfg = HookedBilinearConfig(
        n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_head"],
        d_mlp=s["d_mlp"], d_vocab=n_vocab, n_ctx=s["n_ctx"], normalization_type=norm_type, eps=eps,
        positional_embedding_type="standard" if learned_pos else "rotary", rotary_base=ROTARY_BASE,
        attn_bias=bool(biases), mlp_bias=mlp_bias or bool(biases), unembed_bias="ln_final" in biases,
        gate=GATES[mlp], model_name=name, tokenizer_name=f"TinyStories-{n_vocab}", default_prepend_bos=True,
        device=device, dtype=dtype,
    )
    return Converted(HookedBilinearTransformer, cfg, state, tokenizer=cfg.tokenizer_name)
