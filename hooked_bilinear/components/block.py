"""One pre-norm transformer block: attention then a bilinear MLP, with TL's residual hooks."""

from __future__ import annotations

from typing import Any

from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.components.attention import Attention
from hooked_bilinear.components.bilinear_attention import BilinearAttention
from hooked_bilinear.components.bilinear_mlp import BilinearMLP
from hooked_bilinear.components.norms import make_norm
from hooked_bilinear.config import HookedBilinearConfig


class TransformerBlock(nn.Module):
    """`x += attn(ln1(x)); x += mlp(ln2(x))`."""

    # TL 4.x analysis tools (logit_lens, jacobian_lens) refuse blocks that do not declare that
    # hook_resid_post is the one residual stream the model unembeds; ours is.
    hook_out_is_single_residual_stream = True

    def __init__(self, cfg: HookedBilinearConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        self.ln1 = None if cfg.final_norm_only else make_norm(cfg)
        self.attn = BilinearAttention(cfg) if cfg.attention == "bilinear" else Attention(cfg)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        if not cfg.attn_only:
            self.ln2 = None if cfg.final_norm_only else make_norm(cfg)
            self.mlp = BilinearMLP(cfg)
            self.hook_mlp_in = HookPoint()  # [batch, pos, d_model]
            self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid_pre: Float[Tensor, "batch pos d_model"], **attn_kwargs: Any) -> Float[Tensor, "batch pos d_model"]:
        """`attn_kwargs` (key_mask, positions, past_kv) go to the attention, see `Attention.forward`."""
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.use_split_qkv_input:  # the attention normalises each head's own copy
            attn_out = self.hook_attn_out(self.attn(resid_pre, ln=self.ln1, **attn_kwargs))
        else:
            attn_in = resid_pre if self.ln1 is None else self.ln1(resid_pre)
            attn_out = self.hook_attn_out(self.attn(attn_in, **attn_kwargs))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        if self.cfg.attn_only:
            return self.hook_resid_post(resid_mid)
        # Clone only when hooked, so an in-place edit of mlp_in cannot leak into resid_mid.
        mlp_in = self.hook_mlp_in(resid_mid.clone() if self.hook_mlp_in._forward_hooks else resid_mid)
        mlp_out = self.hook_mlp_out(self.mlp(mlp_in if self.ln2 is None else self.ln2(mlp_in)))
        return self.hook_resid_post(resid_mid + mlp_out)
