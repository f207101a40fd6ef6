"""HookedBilinearMLP: the image classifier of Pearce et al. (embed -> bilinear layers -> head), hooked.

    h_0 = x W_E                                 (pixels -> d_hidden, no bias)
    h_{l+1} = (h_l W_l + b_l) ⊙ (h_l W_r + b_r)  (+ h_l when residual)
    logits = h_L W_U + b_U

A bilinear layer here has no down projection of its own: the head (or the next layer) plays that
role, so `bilinear(layer)` uses the head as the output map for the last layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_bilinear._tl import ActivationCache, HookedRootModule
from hooked_bilinear.components.bilinear_mlp import GATE_FUNCTIONS
from hooked_bilinear.config import GATES, ConfigError, _check_device, _parse_dtype
from hooked_bilinear.errors import InputError, NotBilinearError
from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.model.config_sync import ConfigSyncMixin
from hooked_bilinear.model.init import init_skipped


@dataclass
class HookedBilinearMLPConfig:
    """Sizes of the bilinear image classifier.

    Args:
        d_input: flattened input size (64 for 8×8 digits, 784 for MNIST).
        d_hidden: width of the embedding and of every bilinear layer.
        n_layers: number of bilinear layers.
        n_classes: number of output classes.
        residual: add each layer's input to its output.
        bias: b_l, b_r on each layer and b_U on the head.
        gate: None (bilinear) or "silu"/"relu"/"gelu" for GLU comparison models.
        input_shape: the image shape, for plots (e.g. (8, 8)).
    """

    d_input: int
    d_hidden: int
    n_layers: int = 1
    n_classes: int = 10
    residual: bool = False
    bias: bool = False
    gate: Optional[str] = None
    input_shape: Optional[tuple[int, ...]] = None
    dtype: Any = torch.float32
    device: str = "cpu"
    seed: Optional[int] = None
    model_name: str = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            self.dtype = _parse_dtype(self.dtype)
        self.device = _check_device(self.device)
        for name in ("d_input", "d_hidden", "n_layers", "n_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.gate not in GATES:
            raise ConfigError(f"gate must be one of {GATES} (None = bilinear), got {self.gate!r}")
        if self.input_shape is not None:
            self.input_shape = tuple(self.input_shape)
            if int(torch.tensor(self.input_shape).prod()) != self.d_input:
                raise ConfigError(f"input_shape {self.input_shape} does not have d_input={self.d_input} elements")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out


class BilinearLayer(nn.Module):
    """`(x W_l + b_l) ⊙ (x W_r + b_r)` with `W_l, W_r [d_hidden, d_hidden]` and no output projection."""

    def __init__(self, cfg: HookedBilinearMLPConfig):
        super().__init__()
        self.cfg = cfg
        d, dtype = cfg.d_hidden, cfg.dtype
        self.W_l = nn.Parameter(torch.empty(d, d, dtype=dtype))
        self.W_r = nn.Parameter(torch.empty(d, d, dtype=dtype))
        self.b_l = nn.Parameter(torch.zeros(d, dtype=dtype), requires_grad=cfg.bias)
        self.b_r = nn.Parameter(torch.zeros(d, dtype=dtype), requires_grad=cfg.bias)
        self.gate = GATE_FUNCTIONS[cfg.gate] if cfg.gate is not None else None
        self.hook_pre = HookPoint()  # [batch, d_hidden] left branch
        self.hook_pre_linear = HookPoint()  # [batch, d_hidden] right branch
        self.hook_post = HookPoint()  # [batch, d_hidden] product

    W_out = None  # identity: the head or the next layer reads the product directly

    def forward(self, x: Float[Tensor, "batch d_hidden"]) -> Float[Tensor, "batch d_hidden"]:
        left = self.hook_pre(x @ self.W_l + self.b_l)
        right = self.hook_pre_linear(x @ self.W_r + self.b_r)
        if self.gate is not None:
            left = self.gate(left)
        return self.hook_post(left * right)


class HookedBilinearMLP(ConfigSyncMixin, HookedRootModule):
    """Hooked bilinear image classifier.

    Hooks: `hook_embed`, `blocks.{l}.hook_resid_pre`, `blocks.{l}.mlp.hook_pre/hook_pre_linear/hook_post`,
    `blocks.{l}.hook_resid_post`, `hook_logits`. Weights: `W_E [d_input, d_hidden]`,
    `blocks[l].mlp.W_l/W_r [d_hidden, d_hidden]`, `W_U [d_hidden, n_classes]`, `b_U`.

    Example:
        >>> cfg = HookedBilinearMLPConfig(d_input=64, d_hidden=32, input_shape=(8, 8), seed=0)
        >>> model = HookedBilinearMLP(cfg)
        >>> model(torch.rand(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self, cfg: Union[HookedBilinearMLPConfig, dict]):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = HookedBilinearMLPConfig(**cfg)
        self.cfg = cfg
        dtype = cfg.dtype
        self.W_E = nn.Parameter(torch.empty(cfg.d_input, cfg.d_hidden, dtype=dtype))
        self.hook_embed = HookPoint()  # [batch, d_hidden]
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layers)])
        self.W_U = nn.Parameter(torch.empty(cfg.d_hidden, cfg.n_classes, dtype=dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.n_classes, dtype=dtype), requires_grad=cfg.bias)
        self.hook_logits = HookPoint()  # [batch, n_classes]
        if not init_skipped():  # a loader builds on the meta device and assigns every tensor
            self._init_weights()
            self.to(cfg.device)
        self.setup()

    @torch.no_grad()
    def _init_weights(self) -> None:
        gen = torch.Generator().manual_seed(self.cfg.seed) if self.cfg.seed is not None else None
        for name, p in self.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("W_"):
                std = p.shape[0] ** -0.5
                p.copy_((torch.randn(p.shape, generator=gen) * std).to(p.dtype))

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise InputError(f"images must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim >= 2 and x.shape[-1] != self.cfg.d_input:
            x = x.reshape(x.shape[0], -1)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] != self.cfg.d_input:
            raise InputError(f"images must flatten to [batch, d_input={self.cfg.d_input}], got shape {tuple(x.shape)}")
        return x.to(device=self.W_E.device, dtype=self.cfg.dtype)

    def forward(self, x: Float[Tensor, "batch d_input"], return_type: Optional[str] = "logits",
                labels: Optional[Int[Tensor, "batch"]] = None) -> Any:
        """Classify images. `return_type` is "logits", "loss" (needs `labels`), "both" or None."""
        if return_type not in ("logits", "loss", "both", None):
            raise InputError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        h = self.hook_embed(self._check_input(x) @ self.W_E)
        for block in self.blocks:
            h = block(h)
        logits = self.hook_logits(h @ self.W_U + self.b_U)
        if return_type in ("logits", None):
            return logits if return_type else None
        if labels is None:
            raise InputError("return_type='loss' needs labels")
        loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return loss if return_type == "loss" else (logits, loss)

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Any, ActivationCache]:
        """Run and return `(output, ActivationCache)`; same options as the transformer's."""
        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def bilinear(self, layer: int = -1):
        """The factored tensor of bilinear layer `layer`; the last layer uses the head `W_U` as output map."""
        from hooked_bilinear.tensor import BilinearTensor

        if self.cfg.gate is not None:
            raise NotBilinearError(f"layer {layer} has gate={self.cfg.gate!r}: it is not bilinear")
        n = self.cfg.n_layers
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} out of range for n_layers={n}")
        mlp = self.blocks[layer].mlp
        W_out = self.W_U if layer % n == n - 1 and not self.cfg.residual else None
        return BilinearTensor(mlp.W_l, mlp.W_r, W_out=W_out, b_l=mlp.b_l, b_r=mlp.b_r)

    def save_pretrained(self, directory: str) -> None:
        """Write config.json + model.safetensors."""
        from hooked_bilinear.loading.native import save_native

        save_native(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str, subfolder: Optional[str] = None, **kwargs: Any) -> "HookedBilinearMLP":
        """Load an image model: a `tdooms/mnist` model, a local folder in that format, or our own format.

        Args:
            name_or_path: Hub id (`tdooms/mnist`, or `tdooms/mnist/<model>`) or local folder.
            subfolder: the model inside the repo or folder (`tdooms/mnist` holds one per subfolder).
            **kwargs: `device`, `dtype`, `revision`, `cache_dir`, `nonfinite` (see `load_public`).

        Raises:
            CheckpointError: missing or mismatched files, or a checkpoint that is a language model.

        Example:
            >>> model = HookedBilinearMLP.from_pretrained("tdooms/mnist", subfolder="n0.5-wd0.5-r0-t0")  # doctest: +SKIP
        """
        from hooked_bilinear.errors import CheckpointError
        from hooked_bilinear.loading import load_pretrained

        model = load_pretrained(name_or_path, subfolder=subfolder, **kwargs)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{name_or_path} holds a {type(model).__name__}, not an image model: "
                f"use HookedBilinearTransformer.from_pretrained"
            )
        return model


class _Block(nn.Module):
    def __init__(self, cfg: HookedBilinearMLPConfig):
        super().__init__()
        self.cfg = cfg
        self.hook_resid_pre = HookPoint()  # [batch, d_hidden]
        self.mlp = BilinearLayer(cfg)
        self.hook_resid_post = HookPoint()  # [batch, d_hidden]

    def forward(self, h: Tensor) -> Tensor:
        h = self.hook_resid_pre(h)
        out = self.mlp(h)
        return self.hook_resid_post(h + out if self.cfg.residual else out)
