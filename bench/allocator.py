"""Before/after of the library keeping freed memory (hooked_bilinear.allocator): time, page faults, memory.

The setting is process-wide, so each measurement runs in a fresh process, alternating
HOOKED_BILINEAR_KEEP_FREED_MEMORY=1 (what users get) and =0 (glibc's defaults), `rounds` times each, so that
the load of a shared machine hits both alike. In each process: bench/forward.py's model and plain module
(2 layers, d_model 256, batch 8x128), interleaved repeats of plain / forward / run_with_cache (all hooks)
at `threads` threads with wall time (or, at 1 thread, this thread's CPU time), minor page faults per call,
then memory: peak RSS delta of one run_with_cache (VmHWM reset through /proc/self/clear_refs) and the RSS
left after its cache is freed.

    python bench/allocator.py [--quick] [--threads 2] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ENV = "HOOKED_BILINEAR_KEEP_FREED_MEMORY"
MiB = 1 << 20


def worker(threads: int, repeats: int) -> dict:
    """One process's measurements (runs inside the subprocess)."""
    import torch

    sys.path.insert(0, str(BENCH))
    from _common import rss_kb, time_interleaved
    from _memory import reset_peak
    from forward import build, faults_per_call

    from hooked_bilinear import allocator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, plain = build()
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 128))
    fns = {"plain": lambda: plain(tokens), "forward": lambda: model(tokens),
           "run_with_cache": lambda: model.run_with_cache(tokens)}
    clock = time.thread_time if threads == 1 else time.perf_counter
    with torch.no_grad():
        times = time_interleaved(fns, repeats=repeats, warmup=3, settle=True, clock=clock)
        faults = {k: faults_per_call(fn) for k, fn in fns.items()}
        cpu = {}
        for k, fn in fns.items():
            fn()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            fn()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu[k] = (r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
        process_peak, idle = rss_kb("VmHWM"), rss_kb("VmRSS")  # nothing alive but the model and the tokens
        reset = reset_peak()
        before = rss_kb("VmRSS")
        out = model.run_with_cache(tokens)
        peak = rss_kb("VmHWM") - before
        del out
        after = rss_kb("VmRSS") - before
    state = allocator.state()
    return {"times": times, "faults": faults, "cpu": cpu, "peak_kb": peak, "after_kb": after, "peak_reset": reset,
            "process_peak_kb": process_peak, "idle_kb": idle,
            "active": state.active, "reason": state.reason}


def _spawn(keep: bool, threads: int, repeats: int) -> dict:
    env = dict(os.environ, **{ENV: "1" if keep else "0"})
    for var in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(threads), str(repeats)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"allocator worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int = 2, rounds: int = 4) -> list[dict]:
    rounds, repeats = (1, 5) if quick else (rounds, 15)
    results = {True: [], False: []}
    for _ in range(rounds):
        for keep in (True, False):
            results[keep].append(_spawn(keep, threads, repeats))
    clock = "thread CPU time" if threads == 1 else "wall time"
    rows = []
    for keep, label in ((True, "freed memory kept (library default)"), (False, f"glibc defaults ({ENV}=0)")):
        res = results[keep]
        assert all(r["active"] == keep for r in res), [r["reason"] for r in res]
        for case, target in (("forward", "<= 1.05"), ("run_with_cache", "<= 1.3")):
            ratios = [statistics.median(r["times"][case]) / statistics.median(r["times"]["plain"]) for r in res]
            ms = statistics.median(statistics.median(r["times"][case]) for r in res) * 1e3
            faults = statistics.median(r["faults"][case] for r in res)
            sys_ms = statistics.median(r["cpu"][case][1] for r in res) * 1e3
            rows.append({"bench": "allocator", "case": f"{case} / plain, {threads} threads, {clock}: {label}",
                         "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                         "median_s": ms / 1e3, "target": target if keep else "reference",
                         "note": f"{faults:,.0f} page faults, {sys_ms:.1f} ms system time a call; "
                                 f"median over {len(res)} processes"})
    for case in ("plain", "forward", "run_with_cache"):
        kept = [statistics.median(r["times"][case]) for r in results[True]]
        default = [statistics.median(r["times"][case]) for r in results[False]]
        rows.append({"bench": "allocator", "case": f"{case} time: kept / glibc defaults ({threads} threads, {clock})",
                     "ratio": statistics.median(kept) / statistics.median(default),
                     "ratio_min": min(kept) / max(default), "ratio_max": max(kept) / min(default),
                     "target": "info", "note": f"{statistics.median(kept) * 1e3:.1f} vs "
                                               f"{statistics.median(default) * 1e3:.1f} ms"})
    for key, what in (("process_peak_kb", "process peak RSS (VmHWM) after all the calls"),
                      ("idle_kb", "process RSS between calls (nothing cached alive)"),
                      ("peak_kb", "peak RSS growth of one more run_with_cache"),
                      ("after_kb", "RSS growth left once that cache is freed")):
        kept = statistics.median(r[key] for r in results[True]) / 1024
        default = statistics.median(r[key] for r in results[False]) / 1024
        rows.append({"bench": "allocator", "case": f"{what}: kept / glibc defaults",
                     "ratio": kept / default if default > 0 else None, "target": "info",
                     "note": f"{kept:.1f} vs {default:.1f} MiB"})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    from _common import machine, print_table

    print(machine(), f"load {os.getloadavg()}")
    print_table(run(args.quick, args.threads, args.rounds), ["case", "ratio", "ratio_min", "ratio_max", "note"])
    print(f"load at end {os.getloadavg()}")
