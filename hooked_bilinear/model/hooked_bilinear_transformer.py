"""HookedBilinearTransformer: a TransformerLens-style hooked transformer whose MLPs are bilinear."""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_bilinear._tl import HookedRootModule, lm_cross_entropy_loss
from hooked_bilinear.components import Embed, PosEmbed, TransformerBlock, Unembed, make_norm
from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError, InputError, NotBilinearError
from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.model import processing
from hooked_bilinear.model.config_sync import ConfigSyncMixin
from hooked_bilinear.model.delegate import delegate
from hooked_bilinear.model.generate import GenerationMixin
from hooked_bilinear.model.hooks import HookMixin
from hooked_bilinear.model.init import init_skipped, init_weights
from hooked_bilinear.model.kv_cache import KeyValueCache, attention_inputs
from hooked_bilinear.model.saes import SAEMixin
from hooked_bilinear.model.tl_compat import TLCompatMixin
from hooked_bilinear.model.tokenization import TokenizationMixin
from hooked_bilinear.model.validation import check_residual, check_tokens
from hooked_bilinear.model.weights import WeightAccessors

ReturnType = Optional[Literal["logits", "loss", "both"]]


class HookedBilinearTransformer(ConfigSyncMixin, WeightAccessors, TokenizationMixin, GenerationMixin, TLCompatMixin,
                                SAEMixin, HookMixin, HookedRootModule):
    """A decoder-only transformer with bilinear MLPs and a HookPoint on every activation.

    Hook names, weight names and orientation follow TransformerLens (`blocks.0.mlp.hook_post`,
    `W_Q [n_layers, n_heads, d_model, d_head]`, ...), and the bilinear branches are
    `mlp.hook_pre` (left, `x W_l + b_l`), `mlp.hook_pre_linear` (right) and `mlp.hook_post`.

    Example:
        >>> cfg = HookedBilinearConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        ...                            d_vocab=10, n_ctx=8, seed=0)
        >>> model = HookedBilinearTransformer(cfg)
        >>> logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
        >>> cache["blocks.0.mlp.hook_post"].shape
        torch.Size([1, 3, 32])
    """

    def __init__(self, cfg: Union[HookedBilinearConfig, dict], tokenizer: Any = None):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = HookedBilinearConfig(**cfg)
        if not isinstance(cfg, HookedBilinearConfig):
            raise TypeError(f"cfg must be a HookedBilinearConfig or dict, got {type(cfg).__name__}")
        # Own copy: fold_layer_norm rewrites cfg.normalization_type, which must not leak into
        # other models built from the same config object.
        cfg = copy.copy(cfg)
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(cfg) if cfg.positional_embedding_type == "standard" else None
        if self.pos_embed is not None:
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg)
        if not init_skipped():  # a loader builds on the meta device and assigns every tensor
            init_weights(self, cfg)
            self.to(cfg.device)
        self.setup()
        self.tokenizer = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        cfg.own()  # from now on, fields are re-validated when set and structural ones refused

    # ------------------------------------------------------------------ forward
    def _embed(self, tokens: Int[Tensor, "batch pos"], positions: Optional[Tensor] = None) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None:
            # a broadcast view of W_pos, or its rows at offset positions (left padding, a key/value cache)
            pos = self.pos_embed(tokens) if positions is None else self.pos_embed.W_pos[positions]
            if self.hook_pos_embed._forward_hooks:
                # A hook may edit it in place or keep it (the cache): hand it a copy, never W_pos itself.
                pos = pos.clone()
            resid = resid + self.hook_pos_embed(pos)
        return resid

    def forward(
        self,
        input: Union[str, list[str], Int[Tensor, "batch pos"], Float[Tensor, "batch pos d_model"]],
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        prepend_bos: Optional[bool] = None,
        stop_at_layer: Optional[int] = None,
        start_at_layer: Optional[int] = None,
        tokens: Optional[Int[Tensor, "batch pos"]] = None,
        attention_mask: Optional[Int[Tensor, "batch pos"]] = None,
        past_kv_cache: Optional[KeyValueCache] = None,
        padding_side: Optional[Literal["left", "right"]] = None,
    ) -> Any:
        """Run the model.

        Args:
            input: token ids [batch, pos] or [pos], a string / list of strings (needs a tokenizer),
                or, with `start_at_layer`, the residual stream [batch, pos, d_model].
            return_type: "logits", "loss" (mean next-token cross-entropy; for a list of strings, over the
                real tokens only, not the right padding), "both" ((logits, loss)) or None.
            loss_per_token: return the loss per position [batch, pos-1] instead of its mean (0 on padding).
            prepend_bos: for string input, whether to add the tokenizer's BOS (default `cfg.default_prepend_bos`).
            stop_at_layer: return the residual stream entering block `stop_at_layer` (TL semantics).
            start_at_layer: `input` is the residual stream entering this block.
            tokens: token ids for the loss when `start_at_layer` is given.
            attention_mask: [batch, pos], 1 on real tokens and 0 on padding: padding keys get no attention
                and each row's positions start at its first real token (TL's semantics). A list of strings
                padded on the left gets it automatically.
            past_kv_cache: a `KeyValueCache`: attend to its positions too and append these (generation).
            padding_side: for a list of strings, "left" or "right" (default `cfg.default_padding_side`).

        Raises:
            InputError: wrong dtype, rank, empty input, token ids outside [0, d_vocab), more than n_ctx
                positions (strings too: they are not cut, as tensors are not), or an unknown `return_type`.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise InputError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        n_layers = self.cfg.n_layers
        for name, value in (("start_at_layer", start_at_layer), ("stop_at_layer", stop_at_layer)):
            # Out-of-range values would slice self.blocks to nothing and return a wrong answer silently.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not -n_layers <= value <= n_layers):  # True is not a layer
                raise InputError(f"{name} must be an integer in [-n_layers, n_layers] = [{-n_layers}, {n_layers}], "
                                 f"got {value!r}")
        pad_mask = None  # for a padded batch of strings, the loss skips the padding
        if start_at_layer is None:
            if isinstance(input, (str, list)):
                input, pad_mask = self._encode(input, prepend_bos=prepend_bos, truncate=False, padding_side=padding_side)
                if attention_mask is None and not bool(pad_mask[:, 0].all()):  # left padding shifts positions
                    attention_mask = pad_mask
            tokens = check_tokens(input, self.cfg, what="the input" if pad_mask is not None else "tokens")
            if attention_mask is not None and pad_mask is None:
                pad_mask = torch.as_tensor(attention_mask, device=tokens.device).bool()
            attn_kwargs = attention_inputs(*tokens.shape, self.cfg.n_ctx, tokens.device, attention_mask, past_kv_cache,
                                           getattr(self.cfg, "attention", "softmax"))
            resid = self._embed(tokens, attn_kwargs.get("positions"))
            start_at_layer = 0
        else:
            resid = check_residual(input, self.cfg, "input (with start_at_layer)")
            attn_kwargs = attention_inputs(*resid.shape[:2], self.cfg.n_ctx, resid.device, attention_mask, past_kv_cache,
                                           getattr(self.cfg, "attention", "softmax"))
            if tokens is not None:
                tokens = check_tokens(tokens, self.cfg)
        start = start_at_layer % n_layers if n_layers and start_at_layer < 0 else start_at_layer
        for layer, block in enumerate(self.blocks[start_at_layer:stop_at_layer], start=start):
            if past_kv_cache is not None:
                attn_kwargs["past_kv"] = past_kv_cache.entries[layer]
            resid = block(resid, **attn_kwargs)
        if stop_at_layer is not None:
            return resid
        if self.ln_final is not None:
            resid = self.ln_final(resid)
        logits = self.unembed(resid)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if tokens is None:
            raise InputError("the loss needs token ids: pass tokens=... together with start_at_layer")
        if tokens.shape[-1] < 2:
            raise InputError("the next-token loss needs at least 2 positions")
        loss = lm_cross_entropy_loss(logits, tokens, attention_mask=pad_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    # ------------------------------------------------------------------ bilinear tensor
    def bilinear(self, layer: int, grad: bool = False):
        """The bilinear tensor `B[o,i,j] = Σ_k W_out[k,o] W_l[i,k] W_r[j,k]` of block `layer`, kept factored.

        Its queries return plain tensors; `grad=True` keeps the parameters, so results carry autograd history.

        Raises:
            NotBilinearError: the layer has a gate activation (SwiGLU etc.) or the model is attention-only.
        """
        from hooked_bilinear.tensor import BilinearTensor

        if self.cfg.attn_only:
            raise NotBilinearError("this model is attention-only: it has no bilinear MLPs")
        if not -self.cfg.n_layers <= layer < self.cfg.n_layers:
            raise IndexError(f"layer {layer} out of range for a model with n_layers={self.cfg.n_layers}")
        return BilinearTensor.from_layer(self.blocks[layer].mlp, grad=grad)

    # ------------------------------------------------------------------ circuits
    # the exact path decomposition of one forward pass (signature and docstring: circuits.decompose)
    decompose = delegate("hooked_bilinear.circuits.decompose", "decompose")

    # ------------------------------------------------------------------ weight processing (explicit opt-ins)
    def fold_layer_norm(self) -> "HookedBilinearTransformer":
        """Fold every norm's weight (and LN bias) into the next linear maps; exact for every input."""
        return processing.fold_layer_norm(self)

    def center_writing_weights(self) -> "HookedBilinearTransformer":
        """Subtract the d_model-mean of every matrix writing to the residual stream (LayerNorm models only)."""
        return processing.center_writing_weights(self)

    def center_unembed(self) -> "HookedBilinearTransformer":
        """Subtract the vocab-mean of W_U and b_U: logits shift by a per-position constant."""
        return processing.center_unembed(self)

    def fold_value_biases(self) -> "HookedBilinearTransformer":
        """Move `b_V` into `b_O` (`b_O += Σ_h b_V^h W_O^h`): exact because pattern rows sum to 1."""
        return processing.fold_value_biases(self)

    def process_weights(self, fold_ln: bool = True, center_writing_weights: bool = True,
                        center_unembed: bool = True, fold_value_biases: bool = True) -> "HookedBilinearTransformer":
        """Apply the chosen weight processing steps in TL's order; `center_writing_weights` is skipped for non-LN models."""
        return processing.process_weights(self, fold_ln, center_writing_weights, center_unembed, fold_value_biases)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str) -> None:
        """Write `config.json`, `model.safetensors` (and the tokenizer) to `directory`."""
        from hooked_bilinear.loading.native import save_native

        save_native(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> "HookedBilinearTransformer":
        """Load a bundled model by name, a local folder, or a Hub id (our format or the public ones).

        Example:
            >>> model = HookedBilinearTransformer.from_pretrained("modadd-113-1l")  # doctest: +SKIP
        """
        from hooked_bilinear.loading import load_pretrained

        model = load_pretrained(name_or_path, **kwargs)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{name_or_path!r} holds a {type(model).__name__}, not a {cls.__name__}: "
                f"load it with {type(model).__name__}.from_pretrained or hooked_bilinear.load_pretrained"
            )
        return model

    def summary(self) -> str:
        """One line with the sizes and architecture choices (`print(model)` shows the module tree)."""
        c = self.cfg
        n_params = sum(p.numel() for p in self.parameters())
        return (
            f"HookedBilinearTransformer({c.model_name!r}: {n_params:,} parameters, n_layers={c.n_layers}, d_model={c.d_model}, "
            f"n_heads={c.n_heads}, d_head={c.d_head}, d_mlp={c.d_mlp}, d_vocab={c.d_vocab}, n_ctx={c.n_ctx}, "
            f"norm={c.normalization_type}, pos={c.positional_embedding_type}, gate={c.gate}"
            + (", attn_only" if c.attn_only else "")
            + ("" if getattr(c, "attention", "softmax") == "softmax" else f", attention={c.attention}") + ")"
        )
