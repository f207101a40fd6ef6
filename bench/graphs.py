"""Exact attribution graphs: time, backward sweeps and peak memory of `attribute`, against max_nodes and length.

Models: the bundled `induction-2l` (repeated random tokens) and `tiny-lm` (Python source), and with
`--realsize` a random model of the public fw-medium shape (16 layers, d_model 1024, 16 heads of 64,
d_mlp 4096, vocab 32,000, RMSNorm, rotary; ~335M parameters, float32 on CPU) at 64 and 256 tokens with
`max_nodes=1024`. Every graph uses the default targets (top logits at the last position) and the
default batch size; `check()` is run on each.

Each case runs in a fresh subprocess on ONE intra-op thread (MALLOC_MMAP_THRESHOLD_=65536 so freed
blocks leave RSS, as in bench/circuits.py):
- time: median thread CPU time (`time.thread_time`, so other tenants of a shared machine do not count)
  of `attribute` over the median of `model(tokens)` (no_grad) on the same prompt, interleaved;
  realsize cases are timed once (a single call takes minutes).
- sweeps: `graph.meta["sweeps"]` against ⌈rows / batch_size⌉ + 1 (rows counted from the graph: its
  `is_row` nodes, logits included; the +1 is the logit rows' own batch).
- memory: peak RSS increase of one `attribute` call over that of one `run_with_cache` of the same
  prompt plus the bytes of the returned graph's frames (nodes + edges, pandas deep memory).
  The folded weight copy `attribute` makes (fold_weights) is inside the peak and reported separately.

    python bench/graphs.py [--quick]                # zoo cases, plus the fw-medium shape unless --quick
    python bench/graphs.py --realsize [64 256] [--realsize-nodes 1024] [--json rows.json]   # fw-medium only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, one_thread, print_table, rss_kb, time_interleaved  # noqa: E402

MEM_TARGET = 3.0
FW_MEDIUM = dict(n_layers=16, d_model=1024, n_heads=16, d_head=64, d_mlp=4096, d_vocab=32_000, n_ctx=512,
                 normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=64, attn_bias=False,
                 unembed_bias=False, seed=0, model_name="fw-medium-shape (random)")


def zoo_cases(quick: bool) -> list[dict]:
    nodes = [64, 256] if quick else [64, 256, 1024]
    lens = {"induction-2l": [65] if quick else [33, 65], "tiny-lm": [64] if quick else [32, 64, 128]}
    return [{"model": m, "n": n, "max_nodes": nodes, "repeats": 2 if quick else 3} for m, ns in lens.items() for n in ns]


def realsize_cases(max_nodes: int = 1024) -> list[dict]:
    return [{"model": "fw-medium", "n": n, "max_nodes": [max_nodes], "repeats": 1} for n in (64, 256)]


def build(name: str, n: int):
    """(model, tokens [1, n]) for one case."""
    from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer

    if name == "fw-medium":
        model = HookedBilinearTransformer(HookedBilinearConfig(**FW_MEDIUM)).eval()
        return model, torch.randint(1, FW_MEDIUM["d_vocab"], (1, n), generator=torch.Generator().manual_seed(1))
    model = HookedBilinearTransformer.from_pretrained(name).eval()
    if name == "induction-2l":
        from hooked_bilinear.train.tasks import repeated_tokens

        return model, repeated_tokens(1, half_len=(n - 1) // 2, d_vocab=model.cfg.d_vocab, seed=7)["tokens"]
    import json as json_mod  # a fixed Python source: this package's own json module, a stdlib file

    text = Path(json_mod.__file__).with_name("decoder.py").read_text()
    tokens = model.to_tokens(text)[:, :n]
    if tokens.shape[1] < n:
        raise RuntimeError(f"{name}: the source text has only {tokens.shape[1]} tokens, need {n}")
    return model, tokens


def sweep_flops(cfg, n: int, rows: int) -> float:
    """Upper bound of `attribute`'s FLOPs: per row and block, the neuron edges (2 n d m), the frozen heads
    carried back (W_O and W_V: 2 n d H d_head each; the patterns: 2 H n² d_head)."""
    d, m, hd = cfg.d_model, cfg.d_mlp, cfg.n_heads * cfg.d_head
    return rows * cfg.n_layers * (2 * n * d * m + 4 * n * d * hd + 2 * n * n * hd)


def forward_flops(cfg, n: int) -> float:
    d, m = cfg.d_model, cfg.d_mlp
    per_layer = 4 * d * cfg.n_heads * cfg.d_head + 3 * d * m
    return 2 * n * (cfg.n_layers * per_layer + d * cfg.d_vocab) + 4 * cfg.n_layers * n * n * cfg.n_heads * cfg.d_head


def _peak(fn):
    """(result, peak RSS increase in KiB) of one call."""
    base = rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    out = fn()
    return out, rss_kb("VmHWM") - base


def _child(spec: dict) -> dict:
    """One case in this (fresh) process: timings, sweeps and peaks as a JSON-able dict."""
    from hooked_bilinear.circuits.frozen import fold_weights
    from hooked_bilinear.graphs import attribute
    from hooked_bilinear.graphs.attribute import _auto_batch

    torch.set_num_threads(1)
    model, tokens = build(spec["model"], spec["n"])
    cfg, n, out = model.cfg, tokens.shape[1], {"cases": []}
    with torch.no_grad():
        fwd = lambda: model(tokens)  # noqa: E731
        cache = lambda: model.run_with_cache(tokens)  # noqa: E731
        fwd(), cache()
        _, out["forward_kb"] = _peak(fwd)
        (logits, act), peak = _peak(cache)
        returned = logits.numel() * logits.element_size() + sum(t.numel() * t.element_size() for t in act.values())
        out["cache_kb"] = max(peak, returned / 1024)  # tiny caches live in reused heap pages: count at least what it returns
        del logits, act
        folded, shared = fold_weights(model), {p.data_ptr() for p in model.parameters()}
        tensors = [t for L in folded.layers for t in vars(L).values() if isinstance(t, torch.Tensor)]
        tensors += [t for t in (folded.W_E, folded.W_pos, folded.W_U, folded.b_U) if t is not None]
        out["folded_kb"] = sum(t.numel() * t.element_size() for t in tensors if t.data_ptr() not in shared) / 1024
        del folded, tensors
        out["forward_s"] = statistics.median(time_interleaved({"f": fwd}, repeats=5, warmup=1, clock=time.thread_time)["f"])
        attribute(model, tokens[0, :4], max_nodes=1)  # imports and first-call buffers stay out of the peaks
        for m in spec["max_nodes"]:
            call = lambda m=m: attribute(model, tokens[0], max_nodes=m)  # noqa: E731
            if spec["repeats"] > 1:
                t = time_interleaved({"fwd": fwd, "attr": call}, repeats=spec["repeats"], warmup=1, clock=time.thread_time)
                attr_s, fwd_s = statistics.median(t["attr"]), statistics.median(t["fwd"])
                g, peak = _peak(call)
            else:  # realsize: one call gives both the time and the peak
                start = time.thread_time()
                g, peak = _peak(call)
                attr_s, fwd_s = time.thread_time() - start, out["forward_s"]
            rows = int(g.nodes["is_row"].sum())
            batch = _auto_batch(None, n, cfg.n_layers, cfg.d_mlp, cfg.d_model, 4)
            out["cases"].append(dict(
                max_nodes=m, attr_s=attr_s, fwd_s=fwd_s, peak_kb=peak, rows=rows, batch=batch,
                sweeps=int(g.meta["sweeps"]), edges=len(g.edges), nodes=len(g.nodes), targets=len(g.targets),
                graph_kb=(g.nodes.memory_usage(deep=True).sum() + g.edges.memory_usage(deep=True).sum()) / 1024,
                rel_err=g.check().max_rel_err, flops=sweep_flops(cfg, n, rows), fwd_flops=forward_flops(cfg, n)))
            del g
    return out


def run_case(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"graphs bench child failed for {spec}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows_for(spec: dict, res: dict) -> list[dict]:
    rows = []
    for c in res["cases"]:
        name = f"{spec['model']} n={spec['n']} max_nodes={c['max_nodes']}"
        base = "model(tokens), same prompt, 1 thread"
        ratio = c["attr_s"] / c["fwd_s"]
        flop_ratio = c["flops"] / c["fwd_flops"]
        timed = "1 call" if spec["repeats"] == 1 else f"median of {spec['repeats']}"
        rows.append(dict(bench="graphs", case=f"{name}: time", baseline=base, ratio=ratio, target="reference",
                         median_s=c["attr_s"],
                         note=f"{timed}; {c['rows']} rows ({c['targets']} logits), {c['edges']:,} edges, "
                              f"check rel err {c['rel_err']:.1e}; FLOP bound ×{flop_ratio:.0f} forward "
                              f"({c['flops'] / 1e12:.2f} TFLOP, {c['flops'] / c['attr_s'] / 1e9:.0f} GFLOP/s)"))
        bound = math.ceil(c["rows"] / c["batch"]) + 1
        rows.append(dict(bench="graphs", case=f"{name}: sweeps", ratio=c["sweeps"] / bound,
                         target=f"sweeps <= ceil(rows/B) + 1 = {bound}", met=c["sweeps"] <= bound,
                         note=f"{c['sweeps']} sweeps for {c['rows']} rows, batch B={c['batch']}"))
        allowed = res["cache_kb"] + c["graph_kb"]
        mem = c["peak_kb"] / allowed
        rows.append(dict(bench="graphs", case=f"{name}: peak memory", ratio=mem, target=f"<= {MEM_TARGET:g}",
                         note=f"peak RSS Δ {c['peak_kb'] / 1024:.1f} MiB vs run_with_cache {res['cache_kb'] / 1024:.1f} "
                              f"MiB + graph frames {c['graph_kb'] / 1024:.1f} MiB (forward {res['forward_kb'] / 1024:.1f} "
                              f"MiB; folded weight copy inside the peak {res['folded_kb'] / 1024:.0f} MiB)"))
    return rows


def run(quick: bool = False, realsize: bool = None) -> list[dict]:
    """Rows for run_all: the zoo cases, plus the fw-medium shape unless quick (or realsize=False)."""
    realsize = (not quick) if realsize is None else realsize
    specs = zoo_cases(quick) + (realsize_cases() if realsize else [])
    rows = []
    with one_thread():
        for spec in specs:
            print(f"[graphs] {spec}", file=sys.stderr, flush=True)
            res = run_case(spec, timeout=4 * 3600 if spec["model"] == "fw-medium" else 1800)
            rows += rows_for(spec, res)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats, no fw-medium shape")
    parser.add_argument("--realsize", nargs="*", type=int, default=None, metavar="N",
                        help="only the fw-medium-shape cases (slow), at these lengths (default 64 256)")
    parser.add_argument("--realsize-nodes", type=int, default=1024, help="max_nodes of the realsize cases")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    print(machine())
    if args.realsize is not None:
        specs = [s for s in realsize_cases(args.realsize_nodes) if not args.realsize or s["n"] in args.realsize]
        rows = []
        with one_thread():
            for spec in specs:
                res = run_case(spec, timeout=4 * 3600)
                if args.json:  # the raw measurements first: a realsize case takes many minutes
                    Path(args.json).with_suffix(f".raw{spec['n']}-{args.realsize_nodes}.json").write_text(json.dumps({"spec": spec, "res": res}))
                rows += rows_for(spec, res)
    else:
        rows = run(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print_table(rows, ["case", "ratio", "target", "met", "note"])


if __name__ == "__main__":
    main()
