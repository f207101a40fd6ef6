"""SAEConfig: the sizes, encoder kind and placement of one sparse dictionary (SAE or transcoder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

from hooked_bilinear.config import _parse_dtype
from hooked_bilinear.errors import CheckpointError

ARCHITECTURES = ("topk", "relu", "jumprelu")


@dataclass
class SAEConfig:
    """How an SAE or transcoder is built and where it sits on a model.

    Args:
        d_in: width of the activation read at `hook_name`.
        d_sae: number of features.
        architecture: "topk" (the k largest pre-activations kept), "relu" (SAELens "standard") or
            "jumprelu" (pre-activations above a per-feature `threshold` kept).
        hook_name: where it reads (e.g. "blocks.1.ln2.hook_normalized").
        hook_name_out: where a transcoder writes its reconstruction; None for an SAE (it writes
            back where it reads).
        d_out: width of the reconstruction (`d_in` for an SAE).
        k: active features of a TopK encoder.
        topk_relu: apply a ReLU to the k kept values (SAELens does; the tdooms scope SAEs do not).
        apply_b_dec_to_input: encode `x - b_dec` instead of `x` (needs d_out == d_in; SAELens
            transcoders never do it, tdooms scope transcoders do).
        normalize: inputs are divided by this scalar and outputs multiplied by it (tdooms `normalize`).
        model_name: the model it was trained on.
        dtype, device: of its parameters.
    """

    d_in: int
    d_sae: int
    hook_name: str
    architecture: str = "topk"
    k: Optional[int] = None
    hook_name_out: Optional[str] = None
    d_out: Optional[int] = None
    topk_relu: bool = True
    apply_b_dec_to_input: bool = True
    normalize: Optional[float] = None
    model_name: str = "custom"
    dtype: Any = torch.float32
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            self.dtype = _parse_dtype(self.dtype)
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CheckpointError(f"SAEConfig.{name} must be a positive integer, got {value!r}")
        if self.architecture not in ARCHITECTURES:
            raise CheckpointError(f"SAEConfig.architecture={self.architecture!r}; expected one of {ARCHITECTURES}")
        if self.architecture == "topk":
            if not isinstance(self.k, int) or not 0 < self.k <= self.d_sae:
                raise CheckpointError(f"k={self.k!r} must be an integer in [1, d_sae={self.d_sae}] for a TopK SAE")
        if self.d_out is None:
            self.d_out = self.d_in
        if self.hook_name_out == self.hook_name:
            self.hook_name_out = None
        if self.hook_name_out is None and self.d_out != self.d_in:
            raise CheckpointError(f"d_out={self.d_out} differs from d_in={self.d_in}, which needs hook_name_out "
                                  "(a transcoder)")
        if self.apply_b_dec_to_input and self.d_out != self.d_in:
            raise CheckpointError(f"apply_b_dec_to_input=True needs d_out == d_in, got d_in={self.d_in}, "
                                  f"d_out={self.d_out} (b_dec lives in the output space)")

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary reads at one hook and writes at another."""
        return self.hook_name_out is not None

    @property
    def target_hook_name(self) -> str:
        """Where the reconstruction goes: `hook_name_out`, or `hook_name` for an SAE."""
        return self.hook_name_out or self.hook_name

    def replace(self, **changes: Any) -> "SAEConfig":
        return dataclasses.replace(self, **changes)
