"""HookedBilinearTransformer: a TransformerLens-style hooked transformer whose MLPs are bilinear."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Callable, Literal, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_bilinear._tl import ActivationCache, HookedRootModule, lm_cross_entropy_loss
from hooked_bilinear.components import Embed, PosEmbed, TransformerBlock, Unembed, make_norm
from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError, InputError, NotBilinearError
from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.model import processing
from hooked_bilinear.model.config_sync import ConfigSyncMixin
from hooked_bilinear.model.generate import GenerationMixin
from hooked_bilinear.model.init import init_skipped, init_weights
from hooked_bilinear.model.saes import SAEMixin
from hooked_bilinear.model.tokenization import TokenizationMixin
from hooked_bilinear.model.validation import check_hook_names, check_residual, check_tokens
from hooked_bilinear.model.weights import WeightAccessors

ReturnType = Optional[Literal["logits", "loss", "both"]]
HookList = list[tuple[Union[str, Callable[[str], bool]], Callable]]


class HookedBilinearTransformer(ConfigSyncMixin, WeightAccessors, TokenizationMixin, GenerationMixin, SAEMixin,
                                HookedRootModule):
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

    # ------------------------------------------------------------------ forward
    def _embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None:
            pos = self.pos_embed(tokens)  # a broadcast view of W_pos
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
    ) -> Any:
        """Run the model.

        Args:
            input: token ids [batch, pos] or [pos], a string / list of strings (needs a tokenizer),
                or, with `start_at_layer`, the residual stream [batch, pos, d_model].
            return_type: "logits", "loss" (mean next-token cross-entropy; for a list of strings, over the
                real tokens only, not the right padding), "both" ((logits, loss)) or None.
            loss_per_token: return the loss per position [batch, pos-1] instead of its mean (0 on padding).
            prepend_bos: for string input, whether to add the tokenizer's BOS.
            stop_at_layer: return the residual stream entering block `stop_at_layer` (TL semantics).
            start_at_layer: `input` is the residual stream entering this block.
            tokens: token ids for the loss when `start_at_layer` is given.

        Raises:
            InputError: wrong dtype, rank, empty input, token ids outside [0, d_vocab), more than n_ctx
                positions, or an unknown `return_type`.
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
                input, pad_mask = self._encode(input, prepend_bos=prepend_bos)
            tokens = check_tokens(input, self.cfg)
            resid = self._embed(tokens)
            start_at_layer = 0
        else:
            resid = check_residual(input, self.cfg, "input (with start_at_layer)")
            if tokens is not None:
                tokens = check_tokens(tokens, self.cfg)
        for block in self.blocks[start_at_layer:stop_at_layer]:
            resid = block(resid)
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

    # ------------------------------------------------------------------ hooks
    def _check_hook_list(self, hooks: HookList) -> None:
        check_hook_names([name for name, _ in hooks if isinstance(name, str)], self.hook_dict)

    def add_hook(self, name, hook, dir="fwd", is_permanent=False, level=None, prepend=False) -> None:
        """Add a hook by name (or by a boolean filter on names); unknown names raise HookNameError."""
        if isinstance(name, str):
            check_hook_names([name], self.hook_dict)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def remove_all_hook_fns(self, direction: Literal["fwd", "bwd", "both"] = "both",
                            including_permanent: bool = False, level: Optional[int] = None) -> None:
        """TL's removal, visiting only hook points that hold hooks.

        TL rebuilds both handle lists of every hook point (two nn.Module.__setattr__ calls each), which
        was most of the fixed cost of run_with_hooks/run_with_cache on a small model; a point with no
        handles has nothing to remove.
        """
        if direction not in ("fwd", "bwd", "both"):
            raise ValueError(f"Invalid direction {direction}")
        for hp in self.hook_points():
            if hp.fwd_hooks or hp.bwd_hooks:
                hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    @contextmanager
    def hooks(self, fwd_hooks: HookList = [], bwd_hooks: HookList = [], reset_hooks_end: bool = True,
              clear_contexts: bool = False):
        """Context manager adding temporary hooks; every name is checked before any hook is added,
        and the hooks are removed on exit even when the body or a hook raises."""
        self._check_hook_list(list(fwd_hooks) + list(bwd_hooks))
        with super().hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts) as model:
            yield model

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: Union[None, str, list[str], Callable[[str], bool]] = None,
        device: Union[None, str, torch.device] = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run the model and return `(output, ActivationCache)`.

        Args:
            names_filter: a hook name, a list of names, or a predicate on names (default: all hooks).
                Unknown names raise HookNameError.
            device: move cached activations there (e.g. "cpu" to offload from a GPU).
            remove_batch_dim: drop the batch axis (batch size must be 1).
            incl_bwd: also cache gradients (`<name>_grad`); the output must be a scalar (use return_type="loss").
        """
        if isinstance(names_filter, str):
            check_hook_names([names_filter], self.hook_dict)
        elif isinstance(names_filter, (list, tuple)):
            check_hook_names(names_filter, self.hook_dict)
            names_filter = list(names_filter)
        if model_args and isinstance(model_args[0], Tensor) and model_args[0].ndim == 1:
            # forward accepts tokens [pos]; add the batch axis here, or TL's remove_batch_dim
            # check would read pos as the batch size.
            model_args = (model_args[0][None],) + model_args[1:]
        if remove_batch_dim and model_args and isinstance(model_args[0], Tensor) and model_args[0].ndim == 2 \
                and model_args[0].shape[0] != 1:
            raise InputError(f"remove_batch_dim=True needs batch size 1, got tokens of shape {tuple(model_args[0].shape)}")
        if incl_bwd and model_kwargs.get("return_type", "logits") in ("logits", "both", None):
            raise InputError("incl_bwd=True needs a scalar output: pass return_type='loss'")
        out, cache_dict = super().run_with_cache(
            *model_args, names_filter=names_filter, device=device, remove_batch_dim=remove_batch_dim,
            incl_bwd=incl_bwd, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts, **model_kwargs,
        )
        return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)

    # ------------------------------------------------------------------ bilinear tensor
    def bilinear(self, layer: int):
        """The bilinear tensor `B[o,i,j] = Σ_k W_out[k,o] W_l[i,k] W_r[j,k]` of block `layer`, kept factored.

        Raises:
            NotBilinearError: the layer has a gate activation (SwiGLU etc.) or the model is attention-only.
        """
        from hooked_bilinear.tensor import BilinearTensor

        if self.cfg.attn_only:
            raise NotBilinearError("this model is attention-only: it has no bilinear MLPs")
        if not -self.cfg.n_layers <= layer < self.cfg.n_layers:
            raise IndexError(f"layer {layer} out of range for a model with n_layers={self.cfg.n_layers}")
        return BilinearTensor.from_layer(self.blocks[layer].mlp)

    # ------------------------------------------------------------------ circuits
    def decompose(self, tokens: Any, **kwargs: Any):
        """Exact path decomposition of this forward pass; see `hooked_bilinear.circuits.decompose`.

        Example:
            >>> d = model.decompose(tokens, level=2, target=7)  # doctest: +SKIP
            >>> d.check(), d.top(10)  # doctest: +SKIP
        """
        from hooked_bilinear.circuits import decompose

        return decompose(self, tokens, **kwargs)

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
