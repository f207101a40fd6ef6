"""Explicit, seeded weight initialisation (no hidden global RNG state when `cfg.seed` is set)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hooked_bilinear.config import HookedBilinearConfig


def init_weights(model: nn.Module, cfg: HookedBilinearConfig, generator: Optional[torch.Generator] = None) -> None:
    """Initialise every matrix parameter; biases start at zero and norm weights at one.

    "gpt2": N(0, init_range²), with the residual-writing matrices (W_O, W_out) scaled by
    1/sqrt(2·n_layers) as in GPT-2; "xavier_normal": Xavier on the (fan_in, fan_out) view;
    "zeros": everything zero (useful for tests that set weights by hand).
    """
    if generator is None and cfg.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if not leaf.startswith("W_"):
                continue
            if cfg.init_scheme == "zeros":
                param.zero_()
                continue
            if cfg.init_scheme == "gpt2":
                std = cfg.init_range
                if leaf in ("W_O", "W_out") and cfg.n_layers > 0:
                    std = std / (2 * cfg.n_layers) ** 0.5
            else:  # xavier_normal on the [fan_in, fan_out] view of the TL layout
                fan_out = param.shape[-1]
                fan_in = param.shape[-2] if leaf != "W_O" else param.shape[0] * param.shape[1]
                std = (2.0 / (fan_in + fan_out)) ** 0.5
            sample = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
            param.copy_(sample.to(param.dtype))
