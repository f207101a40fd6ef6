"""TL's ActivationCache, with a wrong key answered like a wrong hook name: the closest cached names."""

from __future__ import annotations

import difflib
from typing import Any

from hooked_bilinear._tl import ActivationCache as _TLActivationCache
from hooked_bilinear.errors import HookNameError


class ActivationCache(_TLActivationCache):
    """`transformer_lens.ActivationCache` (a subclass, so TL's tools accept it); a missing key raises
    `HookNameError` (a KeyError) naming the closest cached names, and whether the hook exists but was
    filtered out of this cache."""

    def __getitem__(self, key: Any):
        try:
            return super().__getitem__(key)
        except (KeyError, TypeError, IndexError, ValueError, AssertionError):
            raise HookNameError(self._explain(key)) from None

    def _explain(self, key: Any) -> str:
        from hooked_bilinear._tl import get_act_name

        name = key
        if not isinstance(key, str):
            try:
                name = get_act_name(*key)
            except Exception:  # noqa: BLE001 - an unusable tuple: report the key as given
                name = repr(key)
        elif "." not in key:
            try:
                name = get_act_name(key)
            except Exception:  # noqa: BLE001
                pass
        known = list(self.cache_dict)
        hooks = getattr(self.model, "hook_dict", {})
        if name in hooks:
            return (f"{key!r} ({name}) is a hook of the model but was not cached: run_with_cache's names_filter "
                    f"left it out ({len(known)} names cached)")
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f"; did you mean {close}?" if close else f"; see cache.keys() ({len(known)} names)"
        return f"no cached activation {key!r}{f' ({name})' if name != key else ''}{hint}"
