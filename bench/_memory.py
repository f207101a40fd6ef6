"""Peak-memory measurement: peak RSS delta of one call, measured in a separate Python process.

How: a fresh worker process (`python bench/_memory.py`) builds the model, then for every measurement
makes the call once as a warm-up, runs `gc.collect()`, resets the kernel's RSS high-water mark (`echo 5 > /proc/self/clear_refs`,
Linux >= 4.0), records VmRSS, makes the call once (keeping its result alive until VmHWM is read),
and reports VmHWM - VmRSS(before): the extra resident memory the call needed at its peak,
including what it returns (logits, cache). glibc's mmap threshold is pinned at 64 KiB
(MALLOC_MMAP_THRESHOLD_) so every tensor buffer is its own mapping and is returned to the OS when
freed; otherwise freed heap memory would be reused silently and hide later peaks. Where
clear_refs is not writable the worker falls back to one measurement per process using
getrusage(RUSAGE_SELF).ru_maxrss, and says so in the result.

Resolution is a few pages; measure cases whose peaks are at least several MiB.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
METHOD = ("peak RSS delta (VmHWM after - VmRSS before, high-water mark reset via /proc/self/clear_refs) "
          "in a separate process, glibc MALLOC_MMAP_THRESHOLD_=65536")


def measure(specs: list[dict], timeout: float = 600) -> list[dict]:
    """Run `specs` in one fresh worker process; each result adds `peak_bytes` and `result_bytes` (what the call returned: logits and cache).

    A spec: {"model": {HookedBilinearConfig kwargs}, "batch": int, "seq": int, "op": "forward" |
    "plain" | "run_with_cache" | "tl_forward" | "tl_run_with_cache", "kwargs": {...run_with_cache
    kwargs, e.g. names_filter, stop_at_layer}}. Specs sharing a model config reuse one model.
    """
    results = _spawn(specs, timeout)
    if len(specs) > 1 and results and results[0]["method"] == "ru_maxrss":
        results = [_spawn([spec], timeout)[0] for spec in specs]  # one process per measurement
    return results


def _spawn(specs: list[dict], timeout: float) -> list[dict]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=json.dumps(specs),
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) through /proc/self/clear_refs; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the distinct tensor storages in obj (a cache often holds several views of one tensor)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if hasattr(obj, "cache_dict"):  # ActivationCache
        obj = obj.cache_dict
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def _worker() -> None:
    import torch

    sys.path.insert(0, str(BENCH))
    from forward import build

    specs = json.loads(sys.stdin.read())
    models: dict[str, tuple] = {}
    results = []
    can_reset = reset_peak()
    torch.set_grad_enabled(False)
    for spec in specs:
        key = json.dumps(spec["model"], sort_keys=True)
        if key not in models:
            model, plain = build(**spec["model"])
            bridge = None
            if spec["op"].startswith("tl_"):
                from tl_bridge import build_bridge

                bridge = build_bridge(model)
            models[key] = (model, plain, bridge)
        model, plain, bridge = models[key]
        if spec["op"].startswith("tl_") and bridge is None:
            from tl_bridge import build_bridge

            bridge = build_bridge(model)
            models[key] = (model, plain, bridge)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, model.cfg.d_vocab, (spec["batch"], spec["seq"]), generator=g)
        kwargs = spec.get("kwargs", {})
        fn = {
            "forward": lambda: model(tokens),
            "plain": lambda: plain(tokens),
            "run_with_cache": lambda: model.run_with_cache(tokens, **kwargs),
            "tl_forward": lambda: bridge(tokens),
            "tl_run_with_cache": lambda: bridge.run_with_cache(tokens, **kwargs),
        }[spec["op"]]
        if can_reset:
            fn()  # warm-up: one-time allocations (thread pools, lazy init) are not the call's cost
            gc.collect()
            reset_peak()
            before = _status_kb("VmRSS")
            out = fn()
            peak = _status_kb("VmHWM")
        else:  # only the first measurement of a process is meaningful with ru_maxrss
            import resource

            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out = fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results.append({**spec, "peak_bytes": max(0, peak - before) * 1024, "result_bytes": _tensor_bytes(out),
                        "method": "clear_refs" if can_reset else "ru_maxrss"})
        del out
    print(json.dumps(results))


if __name__ == "__main__":
    _worker()
