"""Random tensors in the tdooms LM formats (2024-10 and 2024-06 keys), for the benches that write a checkpoint and
time the real loader on it."""

from __future__ import annotations

import torch


def dooms_lm_tensors(n_layers: int, d: int, d_hidden: int, heads: int, vocab: int, *, down: str = "p",
                     norms: bool = False, head_scale: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """`transformer.*` / `lm_head` tensors: `down` names the MLP's down projection ("p" in 2024-10, "o" in
    2024-06); `norms` adds unit RMS weights (the 2024-06 format stores them); `lm_head` is scaled by `head_scale`."""
    g = torch.Generator().manual_seed(seed)
    t = {"transformer.wte.weight": torch.randn(vocab, d, generator=g),
         "lm_head.weight": torch.randn(vocab, d, generator=g) * head_scale}
    for i in range(n_layers):
        p = f"transformer.h.{i}"
        t[f"{p}.attn.qkv.weight"] = torch.randn(3 * d, d, generator=g) * d**-0.5
        t[f"{p}.attn.o.weight"] = torch.randn(d, d, generator=g) * d**-0.5
        t[f"{p}.attn.rotary.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, d // heads, 2).float() / (d // heads))
        t[f"{p}.mlp.w.weight"] = torch.randn(2 * d_hidden, d, generator=g) * d**-0.5
        t[f"{p}.mlp.{down}.weight"] = torch.randn(d, d_hidden, generator=g) * d_hidden**-0.5
        if norms:
            t[f"{p}.n1.norm.weight"], t[f"{p}.n2.norm.weight"] = torch.ones(d), torch.ones(d)
    if norms:
        t["transformer.n_f.norm.weight"] = torch.ones(d)
    return t
