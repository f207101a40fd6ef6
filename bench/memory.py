"""Memory-frugal caching: run_with_cache's peak memory should track what is cached, not the model.

Peak RSS delta of one call (see bench/_memory.py for how it is measured), 2 layers, d_model 256,
d_mlp 1024, d_vocab 1000, batch 32 x 128 (a larger batch than the timing benches so that peaks are
tens of MiB, far above page-level noise). "cached bytes" are the distinct tensor storages in the
returned cache; the forward peak already includes the logits, which run_with_cache returns too.

Rows:
  * all hooks / one hook / every resid_post: peak / (forward peak + cached bytes) <= 1.10, i.e.
    caching costs what it stores and no hidden copies;
  * one hook with stop_at_layer=1: peak / forward peak <= 1.05 (it runs less of the model);
  * one hook vs all hooks, and ours vs the TL bridge's run_with_cache: informational.

    python bench/memory.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main  # noqa: E402
from _memory import METHOD, measure  # noqa: E402

MiB = 2**20
ONE = "blocks.0.hook_resid_post"
CASES = {
    "forward": ("forward", {}),
    "all": ("run_with_cache", {}),
    "one": ("run_with_cache", {"names_filter": ONE}),
    "one_stop": ("run_with_cache", {"names_filter": ONE, "stop_at_layer": 1}),
    "resid_post": ("run_with_cache", {"names_filter": ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]}),
    "tl_forward": ("tl_forward", {}),
    "tl_all": ("tl_run_with_cache", {}),
}


def run(quick: bool = False) -> list[dict]:
    repeats = 1 if quick else 3
    specs = [{"model": {}, "batch": 32, "seq": 128, "op": op, "kwargs": kw, "case": name}
             for _ in range(repeats) for name, (op, kw) in CASES.items()]
    results = measure(specs)
    peaks = {name: [r["peak_bytes"] for r in results if r["case"] == name] for name in CASES}
    out_bytes = {name: next(r["result_bytes"] for r in results if r["case"] == name) for name in CASES}
    method = results[0]["method"]

    def row(case, num, den, target, cached=None, note=""):
        ratios = [n / d for n, d in zip(peaks[num], den)]
        extra = f"{statistics.median(peaks[num]) / MiB:.1f} MiB peak"
        if cached is not None:
            extra += f", {cached / MiB:.1f} MiB cached"
        return {"bench": "memory", "case": case, "ratio": statistics.median(peaks[num]) / statistics.median(den),
                "ratio_min": min(ratios), "ratio_max": max(ratios), "target": target,
                "baseline": f"peak RSS delta of one call, batch 32x128 ({method})",
                "note": extra + (f"; {note}" if note else "")}

    fwd = peaks["forward"]
    rows = []
    for name, label in (("all", "all hooks"), ("one", f"one hook ({ONE})"), ("resid_post", "both resid_post hooks")):
        cached = out_bytes[name] - out_bytes["forward"]
        rows.append(row(f"run_with_cache ({label}): peak / (forward peak + cached)", name,
                        [f + cached for f in fwd], "<= 1.1", cached))
    rows.append(row("run_with_cache (one hook, stop_at_layer=1): peak / forward peak", "one_stop", fwd, "<= 1.05",
                    out_bytes["one_stop"], "returns the cache and the residual at layer 1, no logits"))
    rows.append(row("run_with_cache: one hook / all hooks (peak)", "one", peaks["all"], "info"))
    rows.append(row("ours: run_with_cache (all hooks) peak / forward peak", "all", fwd, "info",
                    out_bytes["all"] - out_bytes["forward"]))
    rows.append(row("TL bridge: run_with_cache (all hooks) peak / TL forward peak", "tl_all", peaks["tl_forward"],
                    "info", out_bytes["tl_all"] - out_bytes["tl_forward"],
                    f"TL forward peak {statistics.median(peaks['tl_forward']) / MiB:.1f} MiB vs ours "
                    f"{statistics.median(fwd) / MiB:.1f} MiB"))
    return rows


if __name__ == "__main__":
    main(__doc__, run, ["case", "ratio", "ratio_min", "ratio_max", "target", "note"], f"\nmethod: {METHOD}")
