"""Cost of "why heads attend": a QK score decomposition and the unfrozen expansion of a bilinear-attention
model, as ratios to one forward pass of the same model in the same run.

Softmax model: d_model 256, 8 heads (d_head 32), d_mlp 1024, d_vocab 512, LayerNorm, rotary, random
weights and biases, one sequence of 128 tokens, float32; target `Target.score(L-1, 0, query_pos=-1)`,
every key position (the whole pattern row). Bilinear-attention model: the same sizes with
`attention="bilinear"` and `normalization_type="Scale"` (nothing frozen); target the logit of the top
token at the last position. Time: median of interleaved repeats on ONE intra-op thread (see circuits.py
for why), against `model(tokens)` under no_grad.

    python bench/attention.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main, one_thread, ratio_stats, time_interleaved  # noqa: E402

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer  # noqa: E402
from hooked_bilinear.circuits import Target, decompose  # noqa: E402

CFG = dict(d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=512, n_ctx=128, positional_embedding_type="rotary")
BASELINE = "model(tokens), same run, 1 thread"


def build(n_layers: int, attention: str, seed: int = 0):
    norm = "LN" if attention == "softmax" else "Scale"
    cfg = HookedBilinearConfig(n_layers=n_layers, normalization_type=norm, attention=attention, mlp_bias=True,
                               seed=seed, **CFG)
    model = HookedBilinearTransformer(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.rsplit(".", 1)[-1].startswith("W_"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        tokens = torch.randint(0, cfg.d_vocab, (1, 128), generator=gen)
    return model, tokens


def _rows(model, tokens, cases: dict, repeats: int, label: str) -> list[dict]:
    results: dict = {}
    keep = lambda name, fn: (lambda: results.__setitem__(name, fn()))  # noqa: E731
    fns = {"forward": lambda: model(tokens), **cases}
    times = time_interleaved({k: keep(k, f) for k, f in fns.items()}, repeats=repeats, warmup=1)
    rows = []
    for name in cases:
        r = results[name]
        rows.append(dict(bench="attention", case=f"{label} {name}", baseline=BASELINE,
                         **ratio_stats(times[name], times["forward"]), target="reference",
                         note=f"{len(r)} terms, rel err {r.check().max_rel_err:.1e}"))
    return rows


def run(quick: bool = False) -> list[dict]:
    repeats = 2 if quick else 5
    rows = []
    with one_thread(), torch.no_grad():
        for n_layers in ((2,) if quick else (2, 4)):
            model, tokens = build(n_layers, "softmax")
            t = Target.score(n_layers - 1, 0, query_pos=-1)
            cases = {f"score level {lvl}": (lambda lvl=lvl: decompose(model, tokens, level=lvl, target=t))
                     for lvl in (1, 2, "neurons")}
            rows += _rows(model, tokens, cases, repeats, f"{n_layers}L softmax")
            model, tokens = build(n_layers, "bilinear")
            top = Target.logit(int(model(tokens)[0, -1].argmax()))
            cases = {"unfrozen level 1 (target)": lambda: decompose(model, tokens, level=1, target=top),
                     "unfrozen level 2 (target)": lambda: decompose(model, tokens, level=2, target=top)}
            for b in ((10,) if quick else (10, 50)):
                cases[f"unfrozen lazy budget {b}"] = (lambda b=b: decompose(model, tokens, level="lazy", target=top,
                                                                             budget=b))
            rows += _rows(model, tokens, cases, repeats, f"{n_layers}L bilinear-attn")
    return rows


if __name__ == "__main__":
    main(__doc__, run, ["case", "ratio", "ratio_min", "ratio_max", "note"])
