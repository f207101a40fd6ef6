"""The current language-model format (2024-10 onward): `tdooms/ts-*`, `tdooms/fw-*`.

config.json: `n_layer, n_head, d_model, d_hidden, n_ctx, bilinear, gate, bias, normalization,
tokenizer` (+ `scale_attn` in newer ones); no vocab size (it is `transformer.wte.weight.shape[0]`).
Forward: RoPE (half-split, base 10000, rotary dim d_head), weightless RMSNorm (eps 1e-8) before
attention, MLP and lm_head, and `x = x + s * attn(N(x))` with `s = 1/sqrt(2 n_layer)` unless the
config says `"scale_attn": false`. We fold `s` into W_O.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.formats._base import Converted, TensorReader, config_value
from hooked_bilinear.loading.formats._lm import (
    ROTARY_BASE, attention_scale, lm_sizes, read_attention, read_embeddings, read_gate, read_mlp,
)

NAME = "dooms-2024-10"
EPS = 1e-8
# A short-lived 2024 bug left unused `*.norm.linear.weight` tensors in some checkpoints (ts-large).
IGNORED = (r".*\.norm\.linear\.weight",)


def matches(config: dict[str, Any]) -> bool:
    return "n_head" in config and "d_hidden" in config and ("gate" in config or "bilinear" in config)


def applies_scale(config: dict[str, Any], scale_attn: Optional[bool]) -> bool:
    """The attention-output scale rule: override if given, else the config flag, absent = true.

    Models trained between the scale's introduction (Oct 2024) and the flag (Nov 2024) carry no
    flag and were trained with the scale; older ones carry `"scale_attn": false`.
    """
    if scale_attn is not None:
        return bool(scale_attn)
    return bool(config.get("scale_attn", True))


def convert(config: dict[str, Any], tensors: dict[str, Tensor], source: str, *, name: str,
            scale_attn: Optional[bool] = None, device: str = "cpu", dtype: Any = "float32") -> Converted:
    """Convert to a HookedBilinearTransformer's config and state dict.

    Args:
        config: the checkpoint's config.json.
        tensors: its raw tensors (names as in checkpoints.md §1).
        source: where they came from, for error messages.
        name: recorded as cfg.model_name.
        scale_attn: override of the attention-output scale rule (see `applies_scale`).

    Raises:
        CheckpointError: unsupported architecture, missing / unknown / mis-shaped tensors (named).
    """
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    if config.get("bilinear", True) is False:
        raise CheckpointError(
            f"{source}: config.json bilinear=false (a plain, non-gated MLP): this architecture is not "
            f"supported, HookedBilinearTransformer only represents bilinear and GLU MLPs"
        )
    if config.get("attention2"):
        raise CheckpointError(f"{source}: config.json attention2=true (bilinear attention) is not supported")
    s = lm_sizes(config, source)
    bias = config_value(config, "bias", bool, source, default=False)
    normalization = config_value(config, "normalization", bool, source, default=True)
    gate = read_gate(config.get("gate"), source)
    scale = attention_scale(s["n_layers"], applies_scale(config, scale_attn))

    r = TensorReader(tensors, source, ignore=IGNORED)
    W_E, W_U = read_embeddings(r, s["d_model"])
    state = {"embed.W_E": W_E, "unembed.W_U": W_U}
    for i in range(s["n_layers"]):
        state.update(read_attention(r, i, s["n_heads"], s["d_head"], scale, qkv_bias=bias, rotary=True))
        state.update(read_mlp(r, i, s["d_model"], s["d_mlp"], "p", w_bias=bias, out_bias=bias))
    r.finish()
    state["unembed.b_U"] = W_U.new_zeros(W_U.shape[1])

    cfg = HookedBilinearConfig(
        n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_head"],
        d_mlp=s["d_mlp"], d_vocab=W_E.shape[0], n_ctx=s["n_ctx"],
        normalization_type="RMSPre" if normalization else None, eps=EPS,
        positional_embedding_type="rotary", rotary_dim=s["d_head"], rotary_base=ROTARY_BASE,
        attn_bias=bias, mlp_bias=bias, unembed_bias=False, gate=gate,
        model_name=name, tokenizer_name=config.get("tokenizer"), default_prepend_bos=True,
        device=device, dtype=dtype,
    )
    return Converted(HookedBilinearTransformer, cfg, state, tokenizer=config.get("tokenizer"))
