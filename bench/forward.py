"""Forward-pass overhead of the hooks, as ratios against a plain un-hooked module (same math, same weights).

(a) forward with no hooks, (b) run_with_cache of every hook, (c) two hook_resid_post hooks.
Case: 2 layers, d_model 256, 4 heads, d_mlp 1024, d_vocab 1000, LayerNorm, batch 8 x 128, CPU float32,
twice: one intra-op thread timing this thread's CPU time, and torch's default threads timing wall time
(what a user's process gets), each interleaved against the plain module in the same run. Each row's
note gives the minor page faults per call (getrusage) and the allocator state: the library asks glibc
to keep freed memory on the first run_with_cache (hooked_bilinear.allocator); run with
HOOKED_BILINEAR_KEEP_FREED_MEMORY=0 to measure glibc's defaults.

    python bench/forward.py [--quick]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main, one_thread, ratio_stats, time_interleaved  # noqa: E402
from _plain import PlainBilinearTransformer  # noqa: E402

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, allocator  # noqa: E402

TARGETS = {"forward (no hooks)": 1.05, "run_with_cache (all hooks)": 1.30, "two resid_post hooks": 1.05}


def build(n_layers=2, d_model=256, n_heads=4, d_mlp=1024, d_vocab=1000, n_ctx=128, seed=0):
    cfg = HookedBilinearConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
                               d_mlp=d_mlp, d_vocab=d_vocab, n_ctx=n_ctx, normalization_type="LN",
                               mlp_bias=True, seed=seed)
    model = HookedBilinearTransformer(cfg).eval()
    return model, PlainBilinearTransformer(model).eval()


def run(quick: bool = False) -> list[dict]:
    """One thread, this thread's CPU time (the stable figure), then torch's default threads, wall time
    (what a user's process gets; noisier on a shared machine)."""
    with one_thread():
        rows = _run(quick)
    wall = _run(quick, clock=time.perf_counter)
    for r in wall:
        r["case"] += f" ({torch.get_num_threads()} threads, wall)"
    return rows + wall


def _run(quick: bool, clock=time.thread_time) -> list[dict]:
    torch.manual_seed(0)
    model, plain = build()
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 128))
    with torch.no_grad():
        err = (model(tokens) - plain(tokens)).abs().max().item()
    assert err < 1e-4, f"plain module disagrees with the hooked model: max abs error {err}"

    def edit(x, hook):
        return x * 1.0

    hooks = [("blocks.0.hook_resid_post", edit), ("blocks.1.hook_resid_post", edit)]
    fns = {
        "plain": lambda: plain(tokens),
        "forward (no hooks)": lambda: model(tokens),
        "run_with_cache (all hooks)": lambda: model.run_with_cache(tokens),
        "two resid_post hooks": lambda: model.run_with_hooks(tokens, fwd_hooks=hooks),
    }
    with torch.no_grad():
        times = time_interleaved(fns, repeats=5 if quick else 31, warmup=3, settle=True, clock=clock)
        faults = {name: faults_per_call(fn) for name, fn in fns.items()}
    state = allocator.state()
    kept = "freed memory kept" if state is not None and state.active else \
        f"glibc defaults ({state.reason if state else 'allocator untouched'})"
    rows = []
    for name, target in TARGETS.items():
        stats = ratio_stats(times[name], times["plain"])
        rows.append({"bench": "forward", "case": name, **stats, "baseline": "plain module",
                     "baseline_s": sorted(times["plain"])[len(times["plain"]) // 2], "target": f"<= {target}",
                     "note": f"{faults[name]:,.0f} page faults a call (plain {faults['plain']:,.0f}); {kept}"})
    return rows


def faults_per_call(fn, calls: int = 3) -> float:
    """Minor page faults of one call (mean of `calls`, each after an untimed call), from getrusage."""
    total = 0
    for _ in range(calls):
        fn()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        total += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return total / calls


if __name__ == "__main__":
    main(__doc__, run, ["case", "median_s", "ratio", "ratio_min", "ratio_max", "target", "note"])
