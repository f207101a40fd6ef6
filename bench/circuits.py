"""Circuit extractor cost: level 1, level 2, full enumeration and lazy expansion, as ratios to one forward pass.

Models: 1, 2, 4, 6 layers, d_model 256, 8 heads (d_head 32), d_mlp 1024, d_vocab 512, LayerNorm, every
weight and bias random (so every bias leaf and ONE exists: the largest term counts), one sequence of
128 tokens, CPU float32. Target of level 2 / full / lazy: the logit of the top token at the last position.

Time: median of interleaved repeats against `model(tokens)` (no hooks, no_grad) in the same process, on
ONE intra-op thread: on the shared 2-core machine this was written on, a 2-thread OpenMP pool made the
6-layer forward pass 40x slower (2.2 s instead of 55 ms) whenever other processes held the cores, which
would make every ratio meaningless. The previous thread count is restored afterwards.
Memory: a fresh subprocess per model (MALLOC_MMAP_THRESHOLD_=65536 so freed blocks leave RSS); each case
is warmed up once, then its RSS high-water delta (VmHWM reset via /proc/self/clear_refs) is divided by
the forward pass's. Lazy expansion is timed at several budgets; its cost per created node shows it
grows linearly in the number of expanded nodes.

    python bench/circuits.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, one_thread, print_table, ratio_stats, rss_kb, time_interleaved  # noqa: E402

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer  # noqa: E402
from hooked_bilinear.circuits import Target, count_paths, decompose  # noqa: E402

CFG = dict(d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=512, n_ctx=128)
LEVEL2_TARGET = {6: 25.0}  # brief: level 2 of the 6-layer model within 25 forward passes
MAX_FULL = 100_000  # decompose's default guard


def build(n_layers: int, seed: int = 0) -> tuple[HookedBilinearTransformer, torch.Tensor, Target]:
    cfg = HookedBilinearConfig(n_layers=n_layers, normalization_type="LN", mlp_bias=True, seed=seed, **CFG)
    model = HookedBilinearTransformer(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.rsplit(".", 1)[-1].startswith("W_"):  # biases and norm weights: not the init's 0 / 1
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        tokens = torch.randint(0, cfg.d_vocab, (1, 128), generator=gen)
        top = int(model(tokens)[0, -1].argmax())
    return model, tokens, Target.logit(top, pos=-1)


def cases(model, tokens, target, budgets: list[int]) -> dict:
    out = {
        "level 1 (full logits)": lambda: decompose(model, tokens, level=1),
        "level 1 (target)": lambda: decompose(model, tokens, level=1, target=target),
        "level 2 (target)": lambda: decompose(model, tokens, level=2, target=target),
    }
    if count_paths(model.cfg.n_layers, model.cfg.n_heads) <= MAX_FULL:
        out["full enumeration (target)"] = lambda: decompose(model, tokens, level="full", target=target)
    for b in budgets:
        out[f"lazy budget {b}"] = (lambda b=b: decompose(model, tokens, level="lazy", target=target, budget=b))
    return out


def _peak_child(n_layers: int, budgets: list[int]) -> None:
    """Runs in a fresh subprocess: print {case: peak RSS increase in KiB} for one model."""
    torch.set_num_threads(1)
    model, tokens, target = build(n_layers)
    fns = {"forward": lambda: model(tokens), **cases(model, tokens, target, budgets)}
    peaks = {}
    with torch.no_grad():
        for name, fn in fns.items():
            fn()  # warm-up: library buffers are not per call
            base = rss_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            result = fn()
            peaks[name] = rss_kb("VmHWM") - base
            del result
    print(json.dumps(peaks))


def peaks_kb(n_layers: int, budgets: list[int]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    try:
        out = subprocess.run([sys.executable, __file__, "--peak-child", str(n_layers), *map(str, budgets)],
                             env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, OSError, ValueError) as exc:
        print(f"[circuits] memory measurement failed for {n_layers} layers: {exc}", file=sys.stderr)
        return {}


def run(quick: bool = False) -> list[dict]:
    with one_thread(), torch.no_grad():
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    layers = (1, 6) if quick else (1, 2, 4, 6)
    budgets = [10, 50] if quick else [10, 30, 100, 300]
    repeats = 2 if quick else 5
    rows = []
    for n_layers in layers:
        model, tokens, target = build(n_layers)
        results: dict = {}
        keep = lambda name, fn: (lambda: results.__setitem__(name, fn()))  # noqa: E731
        fns = {"forward": lambda: model(tokens), **cases(model, tokens, target, budgets)}
        times = time_interleaved({k: keep(k, f) for k, f in fns.items()}, repeats=repeats, warmup=1)
        peaks = peaks_kb(n_layers, budgets)
        n_full = count_paths(n_layers, model.cfg.n_heads)
        for name in fns:
            if name == "forward":
                continue
            result = results[name]
            row = dict(bench="circuits", case=f"{n_layers}L {name}", baseline="model(tokens), same run, 1 thread",
                       **ratio_stats(times[name], times["forward"]), target="reference")
            notes = [f"{len(result)} terms", f"rel err {result.check().max_rel_err:.1e}"]
            if name.startswith("level 2") and n_layers in LEVEL2_TARGET:
                row["target"] = f"<= {LEVEL2_TARGET[n_layers]:g}"
            if name.startswith("lazy"):
                created = sum(h["n_children"] for h in result.history)
                row["nodes_created"] = created
                row["us_per_node"] = 1e6 * row["median_s"] / max(created, 1)
                notes.append(f"{len(result.history)} expanded, {created} nodes created, "
                             f"{row['us_per_node']:.0f} µs/node")
            if peaks.get(name) is not None and peaks.get("forward"):
                row["mem_ratio"] = peaks[name] / peaks["forward"]
                notes.append(f"peak RSS Δ {peaks[name] / 1024:.1f} MB = ×{row['mem_ratio']:.1f} forward")
            row["note"] = "; ".join(notes)
            rows.append(row)
        if n_full > MAX_FULL:
            rows.append(dict(bench="circuits", case=f"{n_layers}L full enumeration", ratio=None, target="refused",
                             met=None, note=f"guard: {n_full:.3g} path terms > max_terms={MAX_FULL:,}; use lazy"))
        del model, results
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peak-child", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        _peak_child(args.peak_child[0], args.peak_child[1:])
        return
    print(machine())
    rows = run(args.quick)
    print_table(rows, ["case", "ratio", "ratio_min", "ratio_max", "mem_ratio", "target", "note"])


if __name__ == "__main__":
    main()
