"""Check a config's sizes against a checkpoint's tensor shapes before anything is built from it.

A `config.json` is edited by hand more often than a safetensors file: an `n_ctx` of 100000 next to an
8-row `W_pos`, or an `n_heads` that no longer matches `W_Q`, must fail here with the config field
named, not later in the allocator or in an error about a field the user never set.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from torch import Tensor

from hooked_bilinear.errors import CheckpointError

# tensor name (with {l} for the layer) -> the config field each axis must equal
TRANSFORMER_AXES: dict[str, tuple[str, ...]] = {
    "embed.W_E": ("d_vocab", "d_model"),
    "pos_embed.W_pos": ("n_ctx", "d_model"),
    "blocks.{l}.attn.W_Q": ("n_heads", "d_model", "d_head"),
    "blocks.{l}.attn.W_O": ("n_heads", "d_head", "d_model"),
    "blocks.{l}.mlp.W_l": ("d_model", "d_mlp"),
    "blocks.{l}.mlp.W_out": ("d_mlp", "d_model"),
    "unembed.W_U": ("d_model", "d_vocab"),
}
_LAYER = re.compile(r"blocks\.(\d+)\.")


def check_config_shapes(cfg: Any, state: dict[str, Tensor], source: str) -> None:
    """Raise CheckpointError when a size in `cfg` contradicts the shape of a tensor in `state`.

    Args:
        cfg: a HookedBilinearConfig (its fields d_vocab, d_model, n_ctx, n_heads, d_head, d_mlp, n_layers).
        state: the checkpoint's tensors in our naming (missing tensors are left to `check_state_dict`).
        source: the file the config came from, for the message.

    Raises:
        CheckpointError: naming the config field, its value, the tensor and its shape.
    """
    layers = {int(m.group(1)) for name in state for m in [_LAYER.match(name)] if m}
    if layers and max(layers) + 1 != cfg.n_layers:
        raise CheckpointError(f"{source}: config n_layers={cfg.n_layers} but the checkpoint has tensors for "
                              f"{max(layers) + 1} layers (blocks.0 .. blocks.{max(layers)})")
    for pattern, fields in TRANSFORMER_AXES.items():
        name = pattern.format(l=0)
        tensor: Optional[Tensor] = state.get(name)
        if tensor is None:
            continue
        if tensor.ndim != len(fields):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, expected "
                                  f"{len(fields)} axes [{', '.join(fields)}]")
        for axis, (field, size) in enumerate(zip(fields, tensor.shape)):
            want = getattr(cfg, field, None)
            if want is not None and want != size:
                raise CheckpointError(
                    f"{source}: config {field}={want} but tensor {name!r} has shape {tuple(tensor.shape)} "
                    f"(axis {axis} is {field}={size}); fix {field} in config.json or use the matching weights"
                )
