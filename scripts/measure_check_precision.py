"""Measure what `PathDecomposition.check()` reports on the bundled models (the numbers in docs/circuits.md).

For each bundled language model and each dtype setting (float32 model; float32 model with
decompose(dtype=float64), i.e. a float64 reference pass; `model.double()`), decompose every
position's top-token logit and the logit difference between the closest two of its top-10 tokens
(a near-tied difference; tiny-lm reads real Python source from the stdlib),
at level 2, and print the distribution of `max_rel_err` (over |reference|) and `max_mass_rel_err`
(over the terms' absolute mass) over positions.

Usage: python scripts/measure_check_precision.py [--seqs 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from hooked_bilinear import HookedBilinearTransformer
from hooked_bilinear.circuits import Target


def inputs(name: str, model, n_seqs: int, gen: torch.Generator) -> torch.Tensor:
    if name == "modadd-113-1l":
        a, b = torch.randint(0, 113, (2, n_seqs), generator=gen)
        return torch.stack([a, b, torch.full_like(a, 113)], 1)
    n = min(model.cfg.n_ctx, 64)
    if name == "tiny-lm":  # real Python source, what the model was trained on
        import inspect
        import json

        text = inspect.getsource(json.decoder)
        ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0]
        starts = torch.randint(0, len(ids) - n, (n_seqs,), generator=gen)
        return torch.stack([ids[s:s + n] for s in starts.tolist()])
    if name == "induction-2l":
        half = torch.randint(0, model.cfg.d_vocab, (n_seqs, n // 2), generator=gen)
        return torch.cat([half, half], 1)
    return torch.randint(0, model.cfg.d_vocab, (n_seqs, n), generator=gen)


def measure(model, tokens, dtype, positions):
    rel, mass, rel_d, mass_d = [], [], [], []
    with torch.no_grad():
        logits = model(tokens)
    for p in positions:
        top2 = logits[:, p].topk(2, -1).indices
        c = model.decompose(tokens, level=2, target=Target.logit(top2[:, 0], pos=p), dtype=dtype).check()
        rel.append(c.max_rel_err)
        mass.append(c.max_mass_rel_err)
        top = logits[:, p].topk(10, -1)  # the closest pair among the top 10: a near-tied difference
        gap = (top.values[:, :, None] - top.values[:, None, :]).abs() + torch.eye(10) * 1e9
        i, j = (gap.flatten(1).argmin(1) // 10), (gap.flatten(1).argmin(1) % 10)
        rows = torch.arange(len(tokens))
        a, b = top.indices[rows, i], top.indices[rows, j]
        c = model.decompose(tokens, level=2, target=Target.logit_diff(a, b, pos=p), dtype=dtype).check()
        rel_d.append(c.max_rel_err)
        mass_d.append(c.max_mass_rel_err)
    return [np.array(x) for x in (rel, mass, rel_d, mass_d)]


def fmt(x: np.ndarray) -> str:
    return f"median {np.median(x):.1e}, max {x.max():.1e}, >1e-5 at {100 * (x > 1e-5).mean():.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seqs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=["modadd-113-1l", "induction-2l", "tiny-lm"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        model = HookedBilinearTransformer.from_pretrained(name).eval()
        tokens = inputs(name, model, args.seqs, torch.Generator().manual_seed(0))
        positions = [-1] if name == "modadd-113-1l" else list(range(tokens.shape[1]))
        settings = [("float32 model", model, None), ("float32 model, dtype=float64", model, torch.float64),
                    ("model.double()", copy.deepcopy(model).double(), None)]
        for label, m, dtype in settings:
            rel, mass, rel_d, mass_d = measure(m, tokens, dtype, positions)
            print(f"{name:14s} {label:30s} top logit: rel {fmt(rel)}; mass {fmt(mass)}")
            print(f"{'':14s} {'':30s} near tie: rel {fmt(rel_d)}; mass {fmt(mass_d)}")


if __name__ == "__main__":
    main()
