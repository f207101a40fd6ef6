"""A key/value cache for generation, and the attention inputs (padding mask, positions) of one forward.

With the cache, each generated token costs one position's forward instead of the whole prefix's:
`generate(use_past_kv_cache=True)` (the default, as in TransformerLens).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.components.attention import KVCacheEntry
from hooked_bilinear.errors import InputError


class KeyValueCache:
    """Per layer, the keys and values of the positions seen so far, and their padding mask.

    Example:
        >>> cache = KeyValueCache(model.cfg.n_layers)  # doctest: +SKIP
        >>> logits = model(prompt, past_kv_cache=cache)  # doctest: +SKIP
        >>> logits = model(next_tokens, past_kv_cache=cache)  # continues after the prompt  # doctest: +SKIP
    """

    def __init__(self, n_layers: int):
        self.entries = [KVCacheEntry() for _ in range(n_layers)]
        self.key_mask: Optional[Tensor] = None  # [batch, length], False on padding

    @property
    def length(self) -> int:
        """Positions already cached."""
        return self.entries[0].length if self.entries else 0


def attention_inputs(batch: int, n: int, n_ctx: int, device, attention_mask: Optional[Tensor],
                     cache: Optional[KeyValueCache], attention: str = "softmax") -> dict:
    """The keyword arguments every block's attention gets: `key_mask`, `positions`, `past_kv` (each only if needed).

    Positions follow TL's `get_offset_position_ids`: with a padding mask, a row's first real token is
    position 0 (left padding); with a cache, positions continue after the cached ones.
    """
    past = 0 if cache is None else cache.length
    if past + n > n_ctx:
        raise InputError(f"the key/value cache holds {past} positions; {n} more exceed n_ctx={n_ctx}")
    if attention_mask is None and cache is None:
        return {}
    if attention != "softmax":
        raise InputError(f"attention_mask and past_kv_cache need softmax attention; this model has attention={attention!r}")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask, device=device).bool()
        if attention_mask.shape != (batch, n):
            raise InputError(f"attention_mask must have the tokens' shape {(batch, n)}, got {tuple(attention_mask.shape)}")
    kwargs: dict = {}
    full = attention_mask
    if cache is not None:
        if cache.key_mask is not None or attention_mask is not None:
            before = cache.key_mask if cache.key_mask is not None else torch.ones(batch, past, dtype=torch.bool, device=device)
            now = attention_mask if attention_mask is not None else torch.ones(batch, n, dtype=torch.bool, device=device)
            full = torch.cat([before, now], dim=1)
            cache.key_mask = full
    if full is not None:
        kwargs["key_mask"] = full
        kwargs["positions"] = (full.long().cumsum(1) - 1).clamp(min=0)[:, past:]
    else:
        kwargs["positions"] = torch.arange(past, past + n, device=device)[None].expand(batch, n)
    return kwargs
