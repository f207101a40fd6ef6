"""Hook management on top of TL's HookedRootModule: names checked before anything is added, cheap removal,
and `run_with_cache` returning our ActivationCache (with gradients when asked, even under no_grad)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Literal, Optional, Union

import torch
from torch import Tensor

from hooked_bilinear.allocator import keep_freed_memory
from hooked_bilinear.errors import InputError
from hooked_bilinear.model.activation_cache import ActivationCache
from hooked_bilinear.model.validation import check_backward_request, check_hook_names

HookList = list[tuple[Union[str, Callable[[str], bool]], Callable]]


class HookMixin:
    """For a HookedRootModule subclass with `hook_dict` and `hook_points()`."""

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

        The first call asks glibc to keep freed memory for reuse (`hooked_bilinear.allocator`; opt out
        with HOOKED_BILINEAR_KEEP_FREED_MEMORY=0), so that each call's new cache tensors do not fault
        in fresh pages.
        """
        if isinstance(names_filter, str):
            check_hook_names([names_filter], self.hook_dict)
        elif isinstance(names_filter, (list, tuple)):
            check_hook_names(names_filter, self.hook_dict)
            names_filter = list(names_filter)
        keep_freed_memory()
        if incl_bwd:
            check_backward_request(self, model_kwargs)
            with torch.enable_grad(), self._activations_need_grad():
                return self._run_with_cache(model_args, names_filter, device, remove_batch_dim, incl_bwd,
                                            reset_hooks_end, clear_contexts, model_kwargs)
        return self._run_with_cache(model_args, names_filter, device, remove_batch_dim, incl_bwd, reset_hooks_end,
                                    clear_contexts, model_kwargs)

    @contextmanager
    def _activations_need_grad(self):
        """With every parameter frozen, make the embedding require grad so activation gradients exist."""
        if any(p.requires_grad for p in self.parameters()):
            yield
            return
        with self.hooks([("hook_embed", lambda x, hook: x.detach().requires_grad_())]):
            yield

    def _run_with_cache(self, model_args, names_filter, device, remove_batch_dim, incl_bwd, reset_hooks_end,
                        clear_contexts, model_kwargs):
        if model_args and isinstance(model_args[0], Tensor) and model_args[0].ndim == 1:
            # forward accepts tokens [pos]; add the batch axis here, or TL's remove_batch_dim
            # check would read pos as the batch size.
            model_args = (model_args[0][None],) + model_args[1:]
        if remove_batch_dim and model_args and isinstance(model_args[0], Tensor) and model_args[0].ndim == 2 \
                and model_args[0].shape[0] != 1:
            raise InputError(f"remove_batch_dim=True needs batch size 1, got tokens of shape {tuple(model_args[0].shape)}")
        out, cache_dict = super().run_with_cache(
            *model_args, names_filter=names_filter, device=device, remove_batch_dim=remove_batch_dim,
            incl_bwd=incl_bwd, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts, **model_kwargs,
        )
        return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
