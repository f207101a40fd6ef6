"""The bilinear MLP: `((x W_l + b_l) ⊙ (x W_r + b_r)) W_out + b_out` (a GLU with no activation).

With `cfg.gate` set, the left branch goes through that activation (SwiGLU, ReGLU, GeGLU); such a
layer is a comparison model and is not bilinear, so the tensor and circuit tools refuse it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.config import HookedBilinearConfig

GATE_FUNCTIONS = {"silu": F.silu, "relu": F.relu, "gelu": F.gelu}


class BilinearMLP(nn.Module):
    """Bilinear (or gated) MLP with `W_l, W_r [d_model, d_mlp]`, `W_out [d_mlp, d_model]`."""

    def __init__(self, cfg: HookedBilinearConfig):
        super().__init__()
        self.cfg = cfg
        d_model, d_mlp, dtype = cfg.d_model, cfg.d_mlp, cfg.dtype
        self.W_l = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_r = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model, dtype=dtype))
        self.b_l = nn.Parameter(torch.zeros(d_mlp, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.b_r = nn.Parameter(torch.zeros(d_mlp, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype), requires_grad=cfg.mlp_bias)
        self.gate = GATE_FUNCTIONS[cfg.gate] if cfg.gate is not None else None
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]  left branch (TL: gate pre-activation)
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]  right branch
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]  their product

    # TransformerLens's GatedMLP names, so code written for TL finds the same tensors.
    @property
    def W_gate(self) -> Tensor:
        return self.W_l

    @property
    def W_in(self) -> Tensor:
        return self.W_r

    @property
    def b_in(self) -> Tensor:
        return self.b_r

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        left = self.hook_pre(torch.matmul(x, self.W_l) + self.b_l)
        right = self.hook_pre_linear(torch.matmul(x, self.W_r) + self.b_r)
        if self.gate is not None:
            left = self.gate(left)
        post = self.hook_post(left * right)
        return torch.matmul(post, self.W_out) + self.b_out
