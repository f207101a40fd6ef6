"""Explicit, seeded weight initialisation (no hidden global RNG state when `cfg.seed` is set)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional

import torch
from torch import nn

from hooked_bilinear.config import HookedBilinearConfig


_SKIP_INIT: ContextVar[bool] = ContextVar("hooked_bilinear_skip_init", default=False)


@contextmanager
def skip_init() -> Iterator[None]:
    """Build models on the meta device with no weight initialisation.

    For loaders that assign every tensor themselves (`load_state_dict(..., assign=True)`):
    random initialisation of a 30M-parameter model costs more than reading its checkpoint.
    Non-persistent buffers (causal mask, RoPE tables) must then be rebuilt with `init_buffers`.
    """
    token = _SKIP_INIT.set(True)
    try:
        with torch.device("meta"):
            yield
    finally:
        _SKIP_INIT.reset(token)


def init_skipped() -> bool:
    """True inside `skip_init()`: constructors leave weights uninitialised on the meta device."""
    return _SKIP_INIT.get()


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
