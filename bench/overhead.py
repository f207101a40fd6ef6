"""Where the hook overhead goes: a profiling report, not part of run_all.

1. Decomposition (bench/forward.py sizes, one intra-op thread, thread CPU time, min over interleaved
   repeats, minor page faults per call): plain module, forward, run_with_cache of every hook and
   without the expensive hook points, a no-op hook on every point, and the TL bridge.
2. cProfile of run_with_cache / run_with_hooks on a tiny model, where compute is negligible and only
   the Python hook machinery is left.
3. torch.profiler operator table of one case (--ops CASE).

    python bench/overhead.py [--repeats 12] [--ops rwc] [--retain]

One thread and CPU time make the numbers usable on a loaded machine. The library asks glibc to keep
freed memory on the first run_with_cache (hooked_bilinear.allocator), so after the warm-up every case
runs without page-fault churn; --retain applies it before the first case, and
HOOKED_BILINEAR_KEEP_FREED_MEMORY=0 shows glibc's defaults (fresh pages faulted in on every call).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def cases(model, plain, bridge, tokens) -> dict:
    hooks = [("blocks.0.hook_resid_post", lambda x, hook: x * 1.0), ("blocks.1.hook_resid_post", lambda x, hook: x * 1.0)]
    skip = lambda *ends: (lambda n: not n.endswith(ends))  # noqa: E731
    out = {
        "plain": lambda: plain(tokens),
        "forward": lambda: model(tokens),
        "two resid_post hooks": lambda: model.run_with_hooks(tokens, fwd_hooks=hooks),
        "rwc all": lambda: model.run_with_cache(tokens),
        "rwc all but hook_result": lambda: model.run_with_cache(tokens, names_filter=skip("attn.hook_result")),
        "rwc all but hook_scale": lambda: model.run_with_cache(tokens, names_filter=skip("hook_scale")),
        "no-op hook everywhere": lambda: model.run_with_hooks(tokens, fwd_hooks=[(lambda n: True, lambda x, hook: None)]),
    }
    if bridge is not None:
        out.update({"TL forward": lambda: bridge(tokens), "TL rwc all": lambda: bridge.run_with_cache(tokens),
                    "TL two resid_post hooks": lambda: bridge.run_with_hooks(tokens, fwd_hooks=hooks)})
    return out


def decomposition(repeats: int) -> None:
    from tl_bridge import build_all

    torch.manual_seed(0)
    model, plain, bridge = build_all()
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 128))
    fns = cases(model, plain, bridge, tokens)
    times = {k: [] for k in fns}
    faults = {k: 0 for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.thread_time()
                fn()
                times[k].append(time.thread_time() - start)
                faults[k] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    base = min(times["plain"])
    print(f"{'case':26s} {'CPU ms':>8s} {'/plain':>7s} {'faults/call':>12s}")
    for k in fns:
        print(f"{k:26s} {min(times[k]) * 1e3:8.2f} {min(times[k]) / base:7.3f} {faults[k] / repeats:12.0f}")


def python_profile() -> None:
    from forward import build

    model, _ = build(d_model=16, n_heads=2, d_mlp=32, d_vocab=50, n_ctx=8)
    tokens = torch.randint(0, 50, (1, 8))
    hooks = [("blocks.0.hook_resid_post", lambda x, hook: x * 1.0), ("blocks.1.hook_resid_post", lambda x, hook: x * 1.0)]
    for name, fn in (("run_with_cache (tiny model)", lambda: model.run_with_cache(tokens)),
                     ("run_with_hooks, 2 hooks (tiny model)", lambda: model.run_with_hooks(tokens, fwd_hooks=hooks)),
                     ("forward (tiny model)", lambda: model(tokens))):
        with torch.no_grad():
            for _ in range(20):
                fn()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(200):
                fn()
            prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
        print(f"\n== cProfile: {name}, 200 calls ==")
        print("\n".join(line[:150] for line in buf.getvalue().splitlines()[4:]))


def op_profile(case: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from tl_bridge import build_all

    torch.manual_seed(0)
    model, plain, bridge = build_all()
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 128))
    fn = cases(model, plain, bridge, tokens)[case]
    with torch.no_grad():
        for _ in range(3):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                fn()
    print(f"\n== torch.profiler: {case}, 10 calls ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--ops", default=None, help="also print the operator table of this case (e.g. 'rwc all')")
    parser.add_argument("--retain", action="store_true", help="glibc keeps freed memory from the start")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.retain:
        from run_all import retain_freed_memory

        print("allocator retains freed memory:", retain_freed_memory())
    decomposition(args.repeats)
    python_profile()
    if args.ops:
        op_profile(args.ops)
