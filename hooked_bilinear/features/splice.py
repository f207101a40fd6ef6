"""Splicing dictionaries into a hooked model, as SAELens's `HookedSAETransformer` does.

An attached SAE runs as a forward hook on the HookPoint at `sae.cfg.hook_name` (a transcoder: it
reads there and writes at `cfg.hook_name_out`). Its six hook points become children of the
input HookPoint, so the model's hook dict and cache name them `f"{hook_name}.hook_sae_acts_post"`,
`….hook_sae_error`, `….hook_sae_recons`, …. The splice hook is registered first on its point
(prepend), so user hooks and the cache at the target name see what flows downstream. Nothing is
registered as a parameter of the model: `model.state_dict()` and `save_pretrained` are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from hooked_bilinear.errors import InputError
from hooked_bilinear.features.sae import SAE

SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
             "hook_sae_output")


@dataclass
class Splice:
    """One attached dictionary: the SAE, whether the error term is kept, and the torch hook handles."""

    sae: SAE
    use_error_term: bool
    handles: list = field(default_factory=list)


def hook_widths(model, names: list[str]) -> dict[str, tuple[int, ...]]:
    """The trailing shape (after [batch, pos]) of each named activation, read off a 1-token forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        hp = model.hook_dict[name]
        def record(mod, args, out, name=name):
            shapes.setdefault(name, tuple(out.shape[2:]))

        handles.append(hp.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, dtype=torch.long, device=model.cfg.device), return_type=None)
    finally:
        for h in handles:
            h.remove()
    return shapes


def check_sae(model, sae: Any) -> None:
    """Raise, changing nothing, if `sae` cannot be attached to `model`.

    Raises:
        InputError: not an SAE, already a dictionary at that hook, or a width that does not match.
        HookNameError: an unknown hook name (with the closest names).
    """
    from hooked_bilinear.model.validation import check_hook_names

    if not isinstance(sae, SAE):
        raise InputError(f"add_sae needs a hooked_bilinear.features.SAE, got {type(sae).__name__}")
    c = sae.cfg
    names = [c.hook_name] + ([c.hook_name_out] if c.is_transcoder else [])
    check_hook_names(names, model.hook_dict)
    attached = _splices(model)
    for name in names:
        for other in attached.values():
            if name in (other.sae.cfg.hook_name, other.sae.cfg.target_hook_name):
                raise InputError(f"{name!r} already has a dictionary attached ({other.sae!r}); call "
                                 "model.reset_saes() first")
    widths = hook_widths(model, names)
    for name, want in zip(names, (c.d_in, c.d_out)):
        if widths.get(name) != (want,):
            got = widths.get(name)
            raise InputError(f"{sae!r} expects width {want} at {name!r}, but that activation has trailing shape "
                             f"{got} (d_in/d_out of the dictionary must equal the hook's last dimension)")


def add_sae(model, sae: SAE, use_error_term: bool = False, check: bool = True) -> None:
    """Attach `sae` at `sae.cfg.hook_name` (see `HookedBilinearTransformer.add_sae`); `check=False` skips
    `check_sae` for a caller that has just run it."""
    if check:
        check_sae(model, sae)
    c = sae.cfg
    splice = Splice(sae, bool(use_error_term))
    source = model.hook_dict[c.hook_name]
    if c.is_transcoder:
        stash: dict[str, torch.Tensor] = {}

        def read(mod, args, out):
            stash["x"] = out

        def write(mod, args, out):
            if "x" not in stash:
                raise InputError(f"transcoder {sae!r} found no input at {c.hook_name!r} before {c.hook_name_out!r}")
            return sae.splice(stash.pop("x"), target=out, use_error_term=splice.use_error_term)

        splice.handles.append(source.register_forward_hook(read))
        splice.handles.append(model.hook_dict[c.hook_name_out].register_forward_hook(write, prepend=True))
    else:
        splice.handles.append(source.register_forward_hook(
            lambda mod, args, out: sae.splice(out, use_error_term=splice.use_error_term), prepend=True))
    for hook in SAE_HOOKS:
        source.add_module(hook, getattr(sae, hook))
    _splices(model)[c.hook_name] = splice
    model.setup()


def reset_saes(model, hook_names: Optional[list[str]] = None) -> None:
    """Detach the dictionaries at `hook_names` (default: all); their hook points leave the model."""
    splices = _splices(model)
    for name in list(splices if hook_names is None else hook_names):
        splice = splices.pop(name, None)
        if splice is None:
            continue
        for handle in splice.handles:
            handle.remove()
        source = model.hook_dict[name]
        for hook in SAE_HOOKS:
            hp = source._modules.pop(hook, None)
            if hp is not None:
                hp.remove_hooks("both", including_permanent=True)
        splice.sae.setup()  # its hook points get their own short names back
    model.setup()


def _splices(model) -> dict[str, Splice]:
    splices = model.__dict__.get("_sae_splices")
    if splices is None:
        splices = {}
        model.__dict__["_sae_splices"] = splices  # a plain attribute: never a submodule or state
    return splices


def attached(model) -> dict[str, SAE]:
    """Input hook name -> attached SAE."""
    return {name: s.sae for name, s in _splices(model).items()}
