"""HookedBilinearConfig: the one dataclass that describes a hooked bilinear transformer."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from hooked_bilinear._tl import TransformerLensConfig
from hooked_bilinear.errors import ConfigError  # defined there, so the errors import without TL

NormType = Optional[Literal["LN", "LNPre", "RMS", "RMSPre", "Scale"]]
NORMALIZATION_TYPES = (None, "LN", "LNPre", "RMS", "RMSPre", "Scale")
ATTENTION_KINDS = ("softmax", "bilinear")
POSITIONAL_TYPES = ("standard", "rotary", "none")
GATES = (None, "silu", "relu", "gelu")
INIT_SCHEMES = ("gpt2", "xavier_normal", "zeros")




# The fields a model's weights, buffers and hook points were built from. Once a model owns the config,
# changing one would make config and weights disagree silently, so it is refused (see `__setattr__`).
STRUCTURAL = frozenset({
    "d_model", "d_head", "n_layers", "n_ctx", "n_heads", "d_mlp", "d_vocab", "n_key_value_heads", "num_experts",
    "experts_per_token", "eps", "normalization_type", "positional_embedding_type", "rotary_dim", "rotary_base",
    "attn_only", "gate", "gated_mlp", "act_fn", "uses_rms_norm", "final_rms", "use_split_qkv_input",
    "layer_norm_folding", "attention", "final_norm_only",
})
# What to call instead of setting the field.
_SETTERS = {"use_split_qkv_input": "model.set_use_split_qkv_input(...)",
            "normalization_type": "model.fold_layer_norm()", "layer_norm_folding": "model.fold_layer_norm()"}


@dataclass
class HookedBilinearConfig(TransformerLensConfig):
    """Configuration of a `HookedBilinearTransformer`.

    A subclass of TransformerLens's `TransformerLensConfig`, so TL utilities (patching,
    head_detector, ActivationCache) read the fields they expect. The MLP is bilinear,
    `MLP(x) = ((x W_l + b_l) * (x W_r + b_r)) W_out + b_out`, unless `gate` names an
    activation applied to the left branch (GLU comparison models).

    Args:
        d_model, d_head, n_layers, n_ctx, n_heads, d_mlp, d_vocab: sizes.
        normalization_type: None, "LN", "LNPre" (no weights), "RMS", "RMSPre" (no weights) or "Scale"
            (a learnable per-channel scale `x * w`, linear: the norm of fully bilinear models).
        eps: added to the variance inside the norms.
        final_norm_only: the blocks have no norms (no ln1/ln2) and `normalization_type` applies to
            `ln_final` only (attention-only checkpoints with one LayerNorm before the unembedding).
        positional_embedding_type: "standard" (learned W_pos), "rotary" or "none".
        rotary_dim: dimensions of each head that are rotated (default: d_head).
        rotary_base: RoPE base.
        attn_only: no MLPs at all.
        attn_bias: train b_Q, b_K, b_V, b_O (they always exist, zero when untrained).
        mlp_bias: train b_l, b_r, b_out (added before the product for b_l, b_r).
        unembed_bias: train b_U.
        gate: None for bilinear; "silu", "relu" or "gelu" for SwiGLU/ReGLU/GeGLU.
        attention: "softmax" (default) or "bilinear": softmax-free `A = mask·(q1·k1)(q2·k2)/attn_scale`
            with two query/key pairs per head (components/bilinear_attention.py).
        attn_scale: divisor of the attention scores (default sqrt(d_head)); with bilinear attention the
            divisor of the product of the two scores (default d_head, i.e. sqrt(d_head) per factor).
        init_scheme: "gpt2" (normal, std init_range), "xavier_normal", or "zeros".
        init_range: std for "gpt2" init (default 0.8 / sqrt(d_model)).
        seed: seed for weight initialisation (None leaves the global RNG alone).
        tokenizer_name: free-form name of the attached tokenizer, for model cards.
        model_name: a name for the model (model cards, repr).
    """

    normalization_type: NormType = "LN"  # type: ignore[assignment]
    positional_embedding_type: str = "standard"
    rotary_dim: Optional[int] = None
    rotary_base: float = 10000.0
    attn_bias: bool = True
    mlp_bias: bool = False
    unembed_bias: bool = True
    gate: Optional[str] = None
    attn_scale: Optional[float] = None
    attention: str = "softmax"
    final_norm_only: bool = False
    init_scheme: str = "gpt2"
    init_range: Optional[float] = None
    seed: Optional[int] = None
    tokenizer_name: Optional[str] = None
    model_name: str = "custom"
    default_prepend_bos: bool = False
    default_padding_side: str = "right"
    use_attn_result: bool = True
    act_fn: Optional[str] = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> None:
        """Fields are re-validated when set on a config a model owns; structural ones are refused."""
        if not self.__dict__.get("_owned"):
            object.__setattr__(self, name, value)
            return
        if name in STRUCTURAL and value != getattr(self, name, None):
            how = _SETTERS.get(name, f"build a new model from dataclasses.replace(model.cfg, {name}=...)")
            raise ConfigError(
                f"cfg.{name} cannot change on a built model: its weights were made for {name}="
                f"{getattr(self, name)!r}, not {value!r}; {how}"
            )
        if name in {f.name for f in dataclasses.fields(self)}:
            trial = copy.copy(self)
            object.__setattr__(trial, "_owned", False)
            object.__setattr__(trial, name, value)
            trial.__post_init__()  # raises ConfigError naming the bad value; self stays unchanged
        object.__setattr__(self, name, value)

    def own(self) -> "HookedBilinearConfig":
        """Mark this config as belonging to a built model (done by the model's constructor)."""
        object.__setattr__(self, "_owned", True)
        return self

    @contextlib.contextmanager
    def rebuilding(self):
        """Allow structural changes inside the block: for code that changes the weights to match (folding)."""
        owned = self.__dict__.get("_owned", False)
        object.__setattr__(self, "_owned", False)
        try:
            yield self
        finally:
            object.__setattr__(self, "_owned", owned)

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            self.dtype = _parse_dtype(self.dtype)
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point torch dtype (e.g. float32), got {self.dtype!r}")
        if not _is_int(self.d_vocab) or self.d_vocab <= 0:
            raise ConfigError(f"d_vocab must be a positive integer, got {self.d_vocab!r}")
        for name in ("d_model", "d_head", "n_layers", "n_ctx"):
            value = getattr(self, name)
            minimum = 0 if name == "n_layers" else 1  # a 0-layer model is a bigram model
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.device is None:
            self.device = "cpu"  # explicit over magic: never move to a GPU behind the user's back
        self.device = _check_device(self.device)
        super().__post_init__()
        if not _is_int(self.n_heads) or self.n_heads <= 0:
            raise ConfigError(f"n_heads must be a positive integer, got {self.n_heads!r}")
        if self.n_key_value_heads is not None and self.n_key_value_heads != self.n_heads:
            raise ConfigError(
                f"n_key_value_heads={self.n_key_value_heads!r} but grouped-query attention is not supported: "
                f"leave it None or equal to n_heads={self.n_heads}"
            )
        if self.num_experts is not None:
            raise ConfigError(f"num_experts={self.num_experts!r}: mixture-of-experts MLPs are not supported")
        if not _is_real(self.eps) or self.eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ConfigError(
                f"normalization_type must be one of {NORMALIZATION_TYPES}, got {self.normalization_type!r}"
            )
        if not isinstance(self.final_norm_only, bool):
            raise ConfigError(f"final_norm_only must be True or False, got {self.final_norm_only!r}")
        if self.final_norm_only and self.normalization_type is None:
            raise ConfigError("final_norm_only=True needs a normalization_type for ln_final, got None "
                              "(with no norm at all use final_norm_only=False)")
        if self.positional_embedding_type not in POSITIONAL_TYPES:
            raise ConfigError(
                f"positional_embedding_type must be one of {POSITIONAL_TYPES}, "
                f"got {self.positional_embedding_type!r}"
            )
        if self.gate not in GATES:
            raise ConfigError(f"gate must be one of {GATES} (None = bilinear), got {self.gate!r}")
        if self.init_scheme not in INIT_SCHEMES:
            raise ConfigError(f"init_scheme must be one of {INIT_SCHEMES}, got {self.init_scheme!r}")
        if self.positional_embedding_type == "rotary":
            if self.rotary_dim is None:
                self.rotary_dim = self.d_head
            if not _is_int(self.rotary_dim) or self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head:
                raise ConfigError(
                    f"rotary_dim must be even and in (0, d_head={self.d_head}], got {self.rotary_dim}"
                )
            if not _is_real(self.rotary_base) or self.rotary_base <= 0:
                raise ConfigError(f"rotary_base must be a finite number > 0, got {self.rotary_base!r}")
        if not self.attn_only and (not _is_int(self.d_mlp) or self.d_mlp <= 0):
            raise ConfigError(f"d_mlp must be a positive integer, got {self.d_mlp!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.attn_scale is None:
            self.attn_scale = math.sqrt(self.d_head) if self.attention == "softmax" else float(self.d_head)
        if not _is_real(self.attn_scale) or self.attn_scale <= 0:
            raise ConfigError(f"attn_scale must be a finite number > 0 (scores are divided by it), got {self.attn_scale!r}")
        if self.init_range is None:
            self.init_range = 0.8 / math.sqrt(self.d_model)
        if not _is_real(self.init_range) or self.init_range < 0:
            raise ConfigError(f"init_range must be a finite number >= 0, got {self.init_range!r}")
        # TL fields with fixed meaning for this architecture
        self.gated_mlp = not self.attn_only
        self.uses_rms_norm = self.normalization_type in ("RMS", "RMSPre")
        self.final_rms = self.uses_rms_norm
        self.act_fn = self.gate or "bilinear"
        if self.default_padding_side not in ("left", "right"):
            raise ConfigError(f"default_padding_side must be 'left' or 'right', got {self.default_padding_side!r}")
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads

    @property
    def d_vocab_out(self) -> int:
        """TL's name for the number of logits: `d_vocab` (the unembedding is square in the vocabulary)."""
        return self.d_vocab

    @property
    def is_bilinear(self) -> bool:
        """True when the MLPs are bilinear (no gate activation)."""
        return self.gate is None and not self.attn_only

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field (dtype as a string)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            elif isinstance(value, torch.device):
                value = str(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HookedBilinearConfig":
        """Build a config from `to_dict` output; unknown keys raise a clear error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_device(device: Any) -> Any:
    """Refuse a device string torch cannot parse, or an accelerator this torch build cannot use."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device={device!r} is not a torch device; expected e.g. 'cpu' or 'cuda:0'") from None
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}.get(dev.type)
    if backend is not None and not backend.is_available():
        raise ConfigError(f"device={device!r} but this torch build cannot use {dev.type} "
                          f"(torch.{dev.type if dev.type == 'cuda' else 'backends.mps'}.is_available() is False); "
                          "use device='cpu' (from_pretrained(..., device='cpu') overrides a saved config)")
    return device


def _parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {name!r}; expected e.g. 'float32' or 'float64'")
    return dtype
