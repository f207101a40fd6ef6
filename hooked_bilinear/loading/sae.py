"""TopK sparse autoencoders from the `{model}-scope` repos (e.g. `tdooms/fw-medium-scope`), hooked.

Each SAE lives in a subfolder `{layer}-{point}-x{expansion}-k{k}[-{tag}]` (underscores as dashes)
with config.json + model.safetensors: `w_enc.weight [F, d]` (+ `w_enc.bias [F]`), `w_dec.weight [d, F]`,
`b_dec [d]`. Forward: `f = topk(W_enc (x - b_dec) + b_enc)` (the k largest pre-activations kept,
the rest zeroed), `x̂ = W_dec f + b_dec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear._tl import HookedRootModule
from hooked_bilinear.config import _parse_dtype
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.loading.build import build_model
from hooked_bilinear.loading.formats._base import TensorReader, config_value
from hooked_bilinear.loading.native import read_config, read_safetensors
from hooked_bilinear.loading.resolve import resolve

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


def sae_subfolder(layer: int, point: str, expansion: int, k: int, tag: Optional[str] = None) -> str:
    """The scope repo's subfolder name, e.g. `sae_subfolder(3, "mlp_in", 4, 30)` -> "3-mlp-in-x4-k30"."""
    name = f"{layer}-{point}-x{expansion}-k{k}".replace("_", "-")
    return f"{name}-{tag}" if tag else name


@dataclass
class TopKSAEConfig:
    """Sizes and placement of a TopK SAE.

    Args:
        d_in: width of the hooked activation; d_sae: number of features; k: active features.
        hook_name: where it reads; target_hook_name: where it writes its reconstruction (same by default).
        normalize: inputs are divided by this (and outputs multiplied) when set.
    """

    d_in: int
    d_sae: int
    k: int
    hook_name: str
    target_hook_name: Optional[str] = None
    encoder_bias: bool = False
    normalize: Optional[float] = None
    model_name: str = "custom"
    dtype: Any = torch.float32
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            self.dtype = _parse_dtype(self.dtype)
        if not 0 < self.k <= self.d_sae:
            raise CheckpointError(f"k={self.k} must be in [1, d_sae={self.d_sae}]")


class TopKSAE(HookedRootModule):
    """A hooked TopK SAE: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`.

    Example:
        >>> sae = load_sae("tdooms/fw-medium-scope", layer=8, point="mlp_in", expansion=4, k=30)  # doctest: +SKIP
        >>> with model.hooks(sae.replacement_hooks()):  # doctest: +SKIP
        ...     loss = model(tokens, return_type="loss")
    """

    def __init__(self, cfg: TopKSAEConfig):
        super().__init__()
        self.cfg = cfg
        d, f, dtype = cfg.d_in, cfg.d_sae, cfg.dtype
        self.W_enc = nn.Parameter(torch.zeros(d, f, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(f, dtype=dtype), requires_grad=cfg.encoder_bias)
        self.W_dec = nn.Parameter(torch.zeros(f, d, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.hook_sae_input = HookPoint()  # [..., d_in]
        self.hook_sae_acts_pre = HookPoint()  # [..., d_sae]
        self.hook_sae_acts_post = HookPoint()  # [..., d_sae], k nonzero
        self.hook_sae_recons = HookPoint()  # [..., d_in]
        self.setup()

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """The k largest pre-activations `(x - b_dec) W_enc + b_enc`, the others zeroed."""
        if self.cfg.normalize is not None:
            x = x / self.cfg.normalize
        pre = self.hook_sae_acts_pre((self.hook_sae_input(x) - self.b_dec) @ self.W_enc + self.b_enc)
        top = pre.topk(self.cfg.k, dim=-1)
        return self.hook_sae_acts_post(torch.zeros_like(pre).scatter(-1, top.indices, top.values))

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        out = f @ self.W_dec + self.b_dec
        return out * self.cfg.normalize if self.cfg.normalize is not None else out

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction `x̂`."""
        return self.hook_sae_recons(self.decode(self.encode(x)))

    def replacement_hooks(self) -> list[tuple[str, Callable]]:
        """Forward hooks that replace the target activation by the SAE's reconstruction.

        Use with `model.hooks(...)` / `run_with_hooks(fwd_hooks=...)`.
        """
        target = self.cfg.target_hook_name or self.cfg.hook_name
        if target == self.cfg.hook_name:
            return [(target, lambda acts, hook: self(acts).to(acts.dtype))]
        stash = {}

        def read(acts, hook):
            stash["x"] = acts

        return [(self.cfg.hook_name, read), (target, lambda acts, hook: self(stash.pop("x")).to(acts.dtype))]


def load_sae(name_or_path: Union[str, os.PathLike], *, layer: Optional[int] = None, point: Optional[str] = None,
             expansion: Optional[int] = None, k: Optional[int] = None, tag: Optional[str] = None,
             subfolder: Optional[str] = None, revision: Optional[str] = None,
             cache_dir: Optional[Union[str, os.PathLike]] = None, device: Optional[str] = None,
             dtype: Any = None) -> TopKSAE:
    """Load a TopK SAE from a scope repo (by layer/point/expansion/k or `subfolder`) or a local folder.

    Raises:
        CheckpointError: missing files or subfolder, unsupported options (bilinear encoder, token
            lookup), or tensors that do not match the config (named).
    """
    if subfolder is None and layer is not None:
        if None in (point, expansion, k):
            raise CheckpointError("load_sae needs point, expansion and k together with layer (or a subfolder)")
        subfolder = sae_subfolder(layer, point, expansion, k, tag)
    ckpt = resolve(name_or_path, subfolder=subfolder, revision=revision, cache_dir=cache_dir)
    config = read_config(ckpt.file("config.json"))
    source = f"{ckpt.name} (TopK SAE)"
    for flag in ("bilinear_encoder", "token_lookup"):
        if config.get(flag):
            raise CheckpointError(f"{source}: config.json {flag}=true is not supported")
    p_name, p_layer = _point(config.get("point"), source)
    target = config.get("target")
    t_name, t_layer = _point(target, source) if target else (p_name, p_layer)
    d = config_value(config, "d_model", int, source)
    f = d * config_value(config, "expansion", int, source)
    bias = bool(config.get("encoder_bias", False))
    r = TensorReader(read_safetensors(ckpt.weights()), source)
    state = {"W_enc": r.take("w_enc.weight", (f, d)).T, "W_dec": r.take("w_dec.weight", (d, f)).T,
             "b_dec": r.take("b_dec", (d,))}
    state["b_enc"] = r.take("w_enc.bias", (f,)) if bias else state["b_dec"].new_zeros(f)
    r.finish()
    cfg = TopKSAEConfig(d_in=d, d_sae=f, k=config_value(config, "k", int, source), hook_name=hook_name(p_name, p_layer),
                        target_hook_name=hook_name(t_name, t_layer), encoder_bias=bias,
                        normalize=config.get("normalize"), model_name=ckpt.name, device=str(device or "cpu"),
                        dtype=dtype or torch.float32)
    return build_model(TopKSAE, cfg, state, source)


def _point(value: Any, source: str) -> tuple[str, int]:
    """`point` as saved: [name, layer] (a namedtuple through json) or {"name":..., "layer":...}."""
    if isinstance(value, dict):
        value = (value.get("name"), value.get("layer"))
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int)):
        raise CheckpointError(f"{source}: config.json point={value!r}, expected [name, layer]")
    return value[0], value[1]
