"""Image classifiers of Pearce et al. (`tdooms/mnist` subfolders `n{noise}-wd{wd}-r0-t0`).

config.json: `d_input` (784), `d_hidden`, `n_layer`, `d_output` (10), `bias`, `residual` (+ training
options). Tensors: `embed.weight [h, d_input]`, `blocks.{i}.weight [2h, h]` (left rows first) and
`blocks.{i}.bias [2h]` when `bias`, `head.weight [d_output, h]`. Loaded as a HookedBilinearMLP.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from torch import Tensor

from hooked_bilinear.loading.formats._base import Converted, TensorReader, config_value

NAME = "mnist"


def matches(config: dict[str, Any]) -> bool:
    return "n_head" not in config and "d_hidden" in config and (
        "d_input" in config or "d_output" in config or "residual" in config
    )


def convert(config: dict[str, Any], tensors: dict[str, Tensor], source: str, *, name: str,
            scale_attn: Optional[bool] = None, device: str = "cpu", dtype: Any = "float32") -> Converted:
    """Convert to a HookedBilinearMLP's config and state dict.

    `W_E = embed.weightᵀ [d_input, h]`; `W_l = w[:h]ᵀ`, `W_r = w[h:]ᵀ [h, h]` (bias split the same
    way); `W_U = head.weightᵀ [h, d_output]`.

    Raises:
        CheckpointError: missing / unknown / mis-shaped tensors (named), or bad config values.
    """
    from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP, HookedBilinearMLPConfig

    d_input = config_value(config, "d_input", int, source, default=784)
    h = config_value(config, "d_hidden", int, source)
    n_layers = config_value(config, "n_layer", int, source)
    n_classes = config_value(config, "d_output", int, source, default=10)
    bias = config_value(config, "bias", bool, source, default=False)
    residual = config_value(config, "residual", bool, source, default=False)

    r = TensorReader(tensors, source)
    state = {"W_E": r.take("embed.weight", (h, d_input)).T}
    for i in range(n_layers):
        w = r.take(f"blocks.{i}.weight", (2 * h, h))
        b = r.take(f"blocks.{i}.bias", (2 * h,)) if bias else w.new_zeros(2 * h)
        state.update({f"blocks.{i}.mlp.W_l": w[:h].T, f"blocks.{i}.mlp.W_r": w[h:].T,
                      f"blocks.{i}.mlp.b_l": b[:h].clone(), f"blocks.{i}.mlp.b_r": b[h:].clone()})
    head = r.take("head.weight", (n_classes, h))
    head_bias = r.take_optional("head.bias", (n_classes,))
    r.finish()
    state["W_U"] = head.T
    state["b_U"] = head.new_zeros(n_classes) if head_bias is None else head_bias

    side = math.isqrt(d_input)
    cfg = HookedBilinearMLPConfig(
        d_input=d_input, d_hidden=h, n_layers=n_layers, n_classes=n_classes, residual=residual,
        bias=bias or head_bias is not None, input_shape=(side, side) if side * side == d_input else None,
        model_name=name, device=device, dtype=dtype,
    )
    return Converted(HookedBilinearMLP, cfg, state, tokenizer=None)
