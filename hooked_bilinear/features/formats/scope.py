"""The tdooms `{model}-scope` TopK SAE layout (e.g. `tdooms/fw-medium-scope`), read and written.

Each SAE lives in a subfolder `{layer}-{point}-x{expansion}-k{k}[-{tag}]` (underscores as dashes)
with `config.json` + `model.safetensors`: `w_enc.weight [F, d]` (+ `w_enc.bias [F]`),
`w_dec.weight [d, F]`, `b_dec [d]`. Forward: `f = topk(W_enc (x/n − b_dec) + b_enc)` (the k largest
pre-activations kept as they are, no ReLU), `x̂ = n (W_dec f + b_dec)`; `target` set makes it a
transcoder (it still subtracts b_dec from its input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.features.config import SAEConfig
from hooked_bilinear.loading.formats._base import TensorReader, config_value

CONFIG = "config.json"
WEIGHTS = "model.safetensors"

# their point names -> our hook names ("mlp_in" is the MLP's input: after ln2 when there is one)
POINTS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_in": "blocks.{layer}.ln2.hook_normalized",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}


def hook_name(point: str, layer: int) -> str:
    """Our hook name for a scope point such as "mlp-in" at `layer`."""
    key = point.replace("-", "_")
    if key not in POINTS:
        raise CheckpointError(f"unknown SAE point {point!r}; expected one of {sorted(POINTS)}")
    return POINTS[key].format(layer=layer)


def point_of(name: str) -> list:
    """The scope `[point, layer]` of one of our hook names (inverse of `hook_name`)."""
    for point, pattern in POINTS.items():
        prefix, suffix = pattern.split("{layer}")
        middle = name[len(prefix):len(name) - len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        if middle.isdigit():
            return [point, int(middle)]
    raise CheckpointError(f"hook {name!r} has no tdooms scope point; the scope format knows "
                          f"{sorted(POINTS.values())}")


def sae_subfolder(layer: int, point: str, expansion: int, k: int, tag: Optional[str] = None) -> str:
    """The scope repo's subfolder name, e.g. `sae_subfolder(3, "mlp_in", 4, 30)` -> "3-mlp-in-x4-k30"."""
    name = f"{layer}-{point}-x{expansion}-k{k}".replace("_", "-")
    return f"{name}-{tag}" if tag else name


def config_from_scope(config: dict[str, Any], source: str) -> SAEConfig:
    """Our `SAEConfig` from a scope `config.json` (dtype and device are set by the caller)."""
    for flag in ("bilinear_encoder", "token_lookup"):
        if config.get(flag):
            raise CheckpointError(f"{source}: config.json {flag}=true is not supported")
    p_name, p_layer = _point(config.get("point"), source)
    target = config.get("target")
    t_name, t_layer = _point(target, source) if target else (p_name, p_layer)
    d = config_value(config, "d_model", int, source)
    f = d * config_value(config, "expansion", int, source)
    return SAEConfig(d_in=d, d_sae=f, architecture="topk", k=config_value(config, "k", int, source),
                     hook_name=hook_name(p_name, p_layer), hook_name_out=hook_name(t_name, t_layer),
                     topk_relu=False, apply_b_dec_to_input=True, normalize=config.get("normalize"))


def state_from_scope(tensors: dict[str, torch.Tensor], cfg: SAEConfig, config: dict[str, Any],
                     source: str) -> dict[str, torch.Tensor]:
    """Our state dict (`W_enc [d, F]`, ...) from the scope tensors, every shape checked."""
    d, f = cfg.d_in, cfg.d_sae
    r = TensorReader(tensors, source)
    state = {"W_enc": r.take("w_enc.weight", (f, d)).T, "W_dec": r.take("w_dec.weight", (d, f)).T,
             "b_dec": r.take("b_dec", (d,))}
    bias = bool(config.get("encoder_bias", False))
    state["b_enc"] = r.take("w_enc.bias", (f,)) if bias else state["b_dec"].new_zeros(f)
    r.finish()
    return state


def save_scope(sae, folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `config.json` + `model.safetensors` in the scope layout.

    Raises:
        CheckpointError: a dictionary the layout cannot hold (not TopK, TopK with a ReLU, d_sae not a
            multiple of d_in, d_out != d_in, a hook without a scope point).
    """
    from safetensors.torch import save_file

    c = sae.cfg
    if c.architecture != "topk":
        raise CheckpointError(f"the scope format holds TopK SAEs only, not architecture={c.architecture!r}; "
                              "use format='saelens'")
    if c.topk_relu:
        raise CheckpointError("the scope format's TopK keeps the k values as they are, but this SAE applies a "
                              "ReLU to them (topk_relu=True); use format='saelens'")
    if c.d_sae % c.d_in or c.d_out != c.d_in or not c.apply_b_dec_to_input:
        raise CheckpointError(f"the scope format needs d_sae a multiple of d_in, d_out == d_in and "
                              f"apply_b_dec_to_input=True; got d_in={c.d_in}, d_sae={c.d_sae}, d_out={c.d_out}, "
                              f"apply_b_dec_to_input={c.apply_b_dec_to_input}")
    config = {"point": point_of(c.hook_name), "target": point_of(c.hook_name_out) if c.is_transcoder else None,
              "d_model": c.d_in, "expansion": c.d_sae // c.d_in, "k": c.k, "normalize": None,
              "encoder_bias": True, "bilinear_encoder": False, "token_lookup": False}
    tensors = {"w_enc.weight": state["W_enc"].T.contiguous(), "w_enc.bias": state["b_enc"],
               "w_dec.weight": state["W_dec"].T.contiguous(), "b_dec": state["b_dec"]}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def _point(value: Any, source: str) -> tuple[str, int]:
    """`point` as saved: [name, layer] (a namedtuple through json) or {"name":..., "layer":...}."""
    if isinstance(value, dict):
        value = (value.get("name"), value.get("layer"))
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int)):
        raise CheckpointError(f"{source}: config.json point={value!r}, expected [name, layer]")
    return value[0], value[1]
