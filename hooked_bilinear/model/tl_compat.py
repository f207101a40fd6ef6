"""TransformerLens switches and helpers that TL code calls on a model.

`set_use_split_qkv_input`, `set_use_attn_result`, `refactor_factored_attn_matrices`, `tl_parameters`
(what `SVDInterpreter` reads) and `loss_fn` behave as in TL's HookedTransformer, so TL's patching and
interpretation code runs unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_bilinear.config import ConfigError


class TLCompatMixin:
    """For `HookedBilinearTransformer`."""

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """TL's switch: give each head its own copy of the pre-ln1 residual for its query, key and value.

        On, `blocks.{l}.attn.hook_q_input/hook_k_input/hook_v_input` [batch, pos, head, d_model] exist and
        fire, and an edit there reaches one head's input alone (TL's direct path patching needs this); ln1
        then normalises each copy, so its hooks fire once per copy. The logits do not change.
        Costs about 3 * n_heads times ln1's activation memory per forward.
        """
        use = bool(use_split_qkv_input)
        if use and getattr(self.cfg, "attention", "softmax") != "softmax":
            raise ConfigError(f"set_use_split_qkv_input needs softmax attention; this model has "
                              f"attention={self.cfg.attention!r}")
        with self.cfg.rebuilding():
            self.cfg.use_split_qkv_input = use
        for block in self.blocks:
            block.attn.set_split_inputs(use)
        self.setup()

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """TL's switch for the per-head outputs `attn.hook_result` [batch, pos, head, d_model].

        On (our default), they are computed whenever something listens there (a hook or a cache); off, that
        hook point never fires and caches skip it, saving n_heads times hook_attn_out's memory.
        """
        self.cfg.use_attn_result = bool(use_attn_result)

    @torch.no_grad()
    def refactor_factored_attn_matrices(self):
        """TL's `refactor_factored_attn_matrices`: W_Q, W_K balanced by the SVD of W_QK; W_V = U S, W_O = Vᵀ.

        Runs TL's own `ProcessWeights.refactor_factored_attn_matrices` on our state dict. Every QK and OV
        circuit, hence every logit, is unchanged; `b_V` moves into `b_O`.

        Raises:
            ConfigError: rotary positions (the QK circuit then depends on the positions, as TL says).
        """
        from hooked_bilinear._tl import ProcessWeights

        if self.cfg.positional_embedding_type == "rotary":
            raise ConfigError("refactor_factored_attn_matrices needs positional_embedding_type 'standard' or "
                              "'none': with rotary positions the QK circuit depends on the positions")
        state = ProcessWeights.refactor_factored_attn_matrices(dict(self.state_dict()), self.cfg)
        for name, param in self.named_parameters():
            if name.split(".")[-1] in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
                param.copy_(state[name].to(param.dtype))
        return self

    def tl_parameters(self) -> dict[str, Tensor]:
        """The parameters under TL's names, for TL tools that read them (`SVDInterpreter`).

        Adds `blocks.{l}.mlp.W_in` [d_model, 2 d_mlp] = `cat(W_l, W_r)`: a bilinear MLP reads the residual
        through both branches, so the SVD of their concatenation gives the directions the MLP reads
        (`SVDInterpreter(model).get_singular_vectors("w_in", l)`).
        """
        params = dict(self.named_parameters())
        if not self.cfg.attn_only:
            for layer, block in enumerate(self.blocks):
                params[f"blocks.{layer}.mlp.W_in"] = torch.cat([block.mlp.W_l, block.mlp.W_r], dim=-1)
        return params

    def loss_fn(self, logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
                attention_mask: Optional[Int[Tensor, "batch pos"]] = None, per_token: bool = False) -> Tensor:
        """TL's `loss_fn`: next-token cross-entropy of `logits` against `tokens` (masked by `attention_mask`)."""
        from hooked_bilinear._tl import lm_cross_entropy_loss

        return lm_cross_entropy_loss(logits, tokens, attention_mask=attention_mask, per_token=per_token)
