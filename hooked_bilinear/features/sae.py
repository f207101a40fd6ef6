"""One hooked sparse dictionary type: TopK, ReLU or JumpReLU encoders, as an SAE or a transcoder.

    pre  = (x / n − b_dec·[apply_b_dec_to_input]) W_enc + b_enc              [..., d_sae]
    acts = topk(pre) | relu(pre) | pre·[pre > threshold]·[pre > 0]            [..., d_sae]
    x̂    = n (acts W_dec + b_dec)                                            [..., d_out]

(n = `cfg.normalize`, 1 when unset). An SAE writes x̂ back where it reads; a transcoder reads at
`cfg.hook_name` and writes at `cfg.hook_name_out`. Attach one to a model with `model.add_sae(sae)`.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from hooked_bilinear._tl import HookedRootModule
from hooked_bilinear.errors import InputError
from hooked_bilinear.features.config import SAEConfig
from hooked_bilinear.hook_point import HookPoint
from hooked_bilinear.model.init import init_skipped


class SAE(HookedRootModule):
    """A hooked SAE / transcoder: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`
    (+ `threshold [d_sae]` for JumpReLU).

    Hook points (SAELens names): `hook_sae_input`, `hook_sae_acts_pre`, `hook_sae_acts_post`,
    `hook_sae_recons`, `hook_sae_error`, `hook_sae_output`. Attached to a model they appear as
    `f"{cfg.hook_name}.hook_sae_acts_post"` etc.

    Example:
        >>> cfg = SAEConfig(d_in=16, d_sae=64, k=4, hook_name="blocks.0.hook_resid_post")
        >>> sae = SAE(cfg, seed=0)
        >>> sae.encode(torch.randn(3, 16)).count_nonzero(-1).tolist()
        [4, 4, 4]
    """

    def __init__(self, cfg: SAEConfig, seed: Optional[int] = None):
        super().__init__()
        self.cfg = cfg
        d, f, o, dtype = cfg.d_in, cfg.d_sae, cfg.d_out, cfg.dtype
        self.W_enc = nn.Parameter(torch.zeros(d, f, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(f, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(f, o, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(o, dtype=dtype))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(f, dtype=dtype))
        self.hook_sae_input = HookPoint()  # [..., d_in]
        self.hook_sae_acts_pre = HookPoint()  # [..., d_sae]
        self.hook_sae_acts_post = HookPoint()  # [..., d_sae]
        self.hook_sae_recons = HookPoint()  # [..., d_out]
        self.hook_sae_error = HookPoint()  # [..., d_out]
        self.hook_sae_output = HookPoint()  # [..., d_out]
        if not init_skipped():  # a loader builds on the meta device and assigns every tensor
            if seed is not None:
                self.init_weights(seed)
            self.to(cfg.device)
        self.setup()

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> "SAE":
        """Unit-norm random decoder rows, encoder = decoder transpose, zero biases (the TopK-SAE recipe)."""
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(self.cfg.d_sae, self.cfg.d_out, generator=g, dtype=torch.float64)
        W = W / W.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(W)
        if self.cfg.d_in == self.cfg.d_out:
            self.W_enc.copy_(W.T)
        else:
            self.W_enc.copy_(torch.randn(self.cfg.d_in, self.cfg.d_sae, generator=g, dtype=torch.float64)
                             / self.cfg.d_in ** 0.5)
        self.b_enc.zero_()
        self.b_dec.zero_()
        return self

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        where = f"{c.hook_name} -> {c.hook_name_out}" if c.is_transcoder else c.hook_name
        kind = "transcoder" if c.is_transcoder else "SAE"
        return f"SAE({c.architecture} {kind}, d_in={c.d_in}, d_sae={c.d_sae}{k}, at {where})"

    # ------------------------------------------------------------------ maths
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != self.cfg.d_in:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"SAE input has shape {shape}; expected [..., d_in={self.cfg.d_in}]")

    def _encode(self, x: Tensor, hooked: bool) -> tuple[Tensor, Tensor]:
        hp = (lambda h, t: h(t)) if hooked else (lambda h, t: t)
        x = hp(self.hook_sae_input, x.to(self.W_enc.dtype))
        if self.cfg.normalize is not None:
            x = x / self.cfg.normalize
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = hp(self.hook_sae_acts_pre, x @ self.W_enc + self.b_enc)
        return pre, hp(self.hook_sae_acts_post, self.activation(pre))

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """The encoder's nonlinearity applied to pre-activations."""
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        top = pre.topk(self.cfg.k, dim=-1)
        values = torch.relu(top.values) if self.cfg.topk_relu else top.values
        return torch.zeros_like(pre).scatter(-1, top.indices, values)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations of `x` (through `hook_sae_input`, `hook_sae_acts_pre`, `hook_sae_acts_post`)."""
        self._check_input(x)
        return self._encode(x, hooked=True)[1]

    def _decode(self, acts: Tensor, hooked: bool) -> Tensor:
        out = acts @ self.W_dec + self.b_dec
        if self.cfg.normalize is not None:
            out = out * self.cfg.normalize
        return self.hook_sae_recons(out) if hooked else out

    def decode(self, acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        """The reconstruction `acts W_dec + b_dec` (through `hook_sae_recons`)."""
        if not isinstance(acts, Tensor) or acts.shape[-1] != self.cfg.d_sae:
            shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
            raise InputError(f"feature activations have shape {shape}; expected [..., d_sae={self.cfg.d_sae}]")
        return self._decode(acts, hooked=True)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The reconstruction `decode(encode(x))` (for a transcoder: its prediction at `hook_name_out`)."""
        return self.decode(self.encode(x))

    def splice(self, x: Float[Tensor, "... d_in"], target: Optional[Tensor] = None,
               use_error_term: bool = False) -> Float[Tensor, "... d_out"]:
        """What the model carries on at the target hook once the dictionary is spliced in.

        Without the error term: the (hooked) reconstruction. With it: `recons + error`, where
        `error = target − recons_clean` is computed with no hooks, written as
        `target + (recons − recons_clean) + (error_hooked − error)` so that, when no hook edits
        the features, the result is `target` bit for bit (the spliced model's logits are exact).

        Args:
            x: the activation at `hook_name`.
            target: the activation at the target hook (`x` for an SAE).
            use_error_term: keep the reconstruction error.
        """
        target = x if target is None else target
        recons = self.decode(self.encode(x))
        if not use_error_term:
            return self.hook_sae_output(recons.to(target.dtype))
        with torch.no_grad():
            clean = self._decode(self._encode(x, hooked=False)[1], hooked=False)
        error = (target.to(clean.dtype) - clean)
        error_hooked = self.hook_sae_error(error.clone())
        delta = (recons - clean) + (error_hooked - error)  # exactly 0 when nothing was edited
        return self.hook_sae_output(target + delta.to(target.dtype))

    def replacement_hooks(self) -> list[tuple[str, Callable]]:
        """Forward hooks that replace the target activation by the reconstruction (for `model.hooks(...)`);
        `model.add_sae(sae)` is the attached alternative with cache entries."""
        target = self.cfg.target_hook_name
        if target == self.cfg.hook_name:
            return [(target, lambda acts, hook: self(acts).to(acts.dtype))]
        stash = {}

        def read(acts, hook):
            stash["x"] = acts

        return [(self.cfg.hook_name, read), (target, lambda acts, hook: self(stash.pop("x")).to(acts.dtype))]

    # ------------------------------------------------------------------ files
    def save(self, path: Union[str, os.PathLike], format: str = "saelens") -> None:
        """Write the dictionary to folder `path`: "saelens" (`cfg.json` + `sae_weights.safetensors`,
        loadable by SAELens) or "scope" (the tdooms `{model}-scope` layout: `config.json` + `model.safetensors`)."""
        from hooked_bilinear.features.formats import save_sae

        save_sae(self, path, format=format)
