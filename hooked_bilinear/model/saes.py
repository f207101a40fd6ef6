"""SAEMixin: `add_sae`, `reset_saes` and `saes([...])` on the model, mirroring SAELens's HookedSAETransformer.

Thin lazy doors into `hooked_bilinear.features.splice` (the model never imports features/ at top level).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional


class SAEMixin:
    """Attach sparse dictionaries (SAEs, transcoders) at hook points."""

    def add_sae(self, sae: Any, use_error_term: bool = False) -> None:
        """Splice `sae` in at `sae.cfg.hook_name` until `reset_saes()`.

        The cache then holds `f"{hook_name}.hook_sae_acts_post"`, `….hook_sae_acts_pre`,
        `….hook_sae_recons`, `….hook_sae_error`, `….hook_sae_input`, `….hook_sae_output`. With
        `use_error_term=True` the reconstruction error is added back, so the logits equal the
        original model's exactly while the features stay readable and editable.

        Raises:
            HookNameError: an unknown hook name. InputError: a width that does not match the hook,
                a hook that already has a dictionary, or not an SAE. Nothing is attached on error.

        Example:
            >>> sae = load_sae("tiny-lm/L1-mlp-out")  # doctest: +SKIP
            >>> model.add_sae(sae)  # doctest: +SKIP
            >>> _, cache = model.run_with_cache(tokens)  # doctest: +SKIP
            >>> cache["blocks.1.hook_mlp_out.hook_sae_acts_post"].shape  # doctest: +SKIP
        """
        from hooked_bilinear.features.splice import add_sae

        add_sae(self, sae, use_error_term=use_error_term)

    def reset_saes(self, hook_names: Optional[list[str]] = None) -> None:
        """Detach the dictionaries at `hook_names` (input hook names; default: every one)."""
        from hooked_bilinear.features.splice import reset_saes

        reset_saes(self, hook_names)

    @property
    def acts_to_saes(self) -> dict[str, Any]:
        """The attached dictionaries by input hook name (SAELens's name for it)."""
        from hooked_bilinear.features.splice import attached

        return attached(self)

    @contextmanager
    def saes(self, saes: list = (), use_error_term: bool = False) -> Iterator[Any]:
        """Attach `saes` for the duration of a `with` block; they are detached on exit, even after an error.

        Every dictionary is checked before any is attached.
        """
        from hooked_bilinear.features.splice import add_sae, check_sae, reset_saes

        saes = list(saes)
        for sae in saes:
            check_sae(self, sae)
        names = [s.cfg.hook_name for s in saes]
        if len(set(names)) != len(names):
            from hooked_bilinear.errors import InputError

            raise InputError(f"two dictionaries read at the same hook: {names}")
        added = []
        try:
            for sae in saes:
                add_sae(self, sae, use_error_term=use_error_term, check=False)
                added.append(sae.cfg.hook_name)
            yield self
        finally:
            reset_saes(self, added)
