"""Real size: every core operation on a random model of the tdooms/fw-medium shape, within one machine.

Shape: 16 layers, d_model 1024, 16 heads, d_mlp 4096, vocab 32,000, n_ctx 512 (~335M parameters,
1.3 GB in float32), written in the tdooms 2024-10 checkpoint format and loaded by the real loader.
At 128 tokens: load, forward, run_with_cache (all hooks, one hook), decompose level 1 and 2 for one
logit, attribute (64 rows), eig(u, k=32) dense and block, and batched top-8 spectra by the block
solver against dense eigh / eigvalsh of the formed Q_u, with its accuracy against float64 dense on a
sample (``realsize_spectra.py``, which also runs alone on one layer of this shape).

Each row: the time as a ratio to its baseline (a forward pass, a bare read of the file, or the
dense method) measured in the same run, the peak memory of the call (RSS high-water mark over the
call minus the RSS before it: /proc/self/clear_refs), and where the FLOP count is known exactly, the
FLOP-rate ratio (achieved GFLOP/s over the forward pass's). Torch's default threads, wall time.

    python bench/realsize.py [--quick] [--threads N]

Memory: the checkpoint (1.3 GB) is written once to a temporary folder; the process stays under
~6 GB. Random weights give Q_u a random-matrix spectrum (top |λ| within 0.3-0.9 % of each other),
the hardest case for any Krylov method; ``realsize_spectra.py --floor`` measures what an ideal one needs.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import dooms_lm_tensors  # noqa: E402
from _common import main, rss_kb, tag_threads, time_interleaved  # noqa: E402
from realsize_spectra import spectra_rows  # noqa: E402

L, D, HEADS, H, CTX, VOCAB, T = 16, 1024, 16, 4096, 512, 32000, 128


def write_checkpoint(folder: Path) -> Path:
    """The fw-medium shape in the 2024-10 format (config keys as the public config.json)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"n_layer": L, "n_head": HEADS, "d_model": D, "d_hidden": H, "n_ctx": CTX, "bilinear": True, "gate": None,
           "bias": False, "normalization": True, "tokenizer": "mistral"}
    (folder / "config.json").write_text(json.dumps(cfg))
    t = dooms_lm_tensors(L, D, H, HEADS, VOCAB, head_scale=D**-0.5)
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def forward_flops(t: int) -> float:
    per_layer = 2 * 4 * D * D * t + 2 * 2 * t * t * D + 2 * 3 * D * H * t
    return L * per_layer + 2 * D * VOCAB * t


def peak_mb(fn) -> float:
    """RSS high-water mark over one call of ``fn`` minus the RSS just before (MiB)."""
    gc.collect()
    base = rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    fn()
    return (rss_kb("VmHWM") - base) / 1024


def once(fn):
    """(seconds, peak MiB, result) of one call: heavy operations run once, timed and measured together."""
    gc.collect()
    base = rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        ok = True
    except OSError:
        ok = False
    t0 = time.perf_counter()
    res = fn()
    secs = time.perf_counter() - t0
    return secs, ((rss_kb("VmHWM") - base) / 1024 if ok else float("nan")), res


def _log(row: dict) -> None:
    print(f"[realsize] {row['case']}: {row.get('ratio')} ({row.get('note')})", file=sys.stderr, flush=True)


def run(quick: bool = False) -> list[dict]:
    from safetensors.torch import load_file

    from hooked_bilinear import Target
    from hooked_bilinear.graphs import attribute
    from hooked_bilinear.loading import load_pretrained

    rows: list[dict] = []
    reps = 2 if quick else 3
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = write_checkpoint(Path(tmp) / "fw-medium-shape")
        gc.collect()
        weights = str(folder / "model.safetensors")
        load = lambda: load_pretrained(folder, tokenizer=False)  # noqa: E731
        t_load = time_interleaved({"read": lambda: load_file(weights, backend="pread"), "load": load},
                                  repeats=2, warmup=0)
        load_peak = peak_mb(load)
        model = load()
        n_params = sum(p.numel() for p in model.parameters())
        tokens = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(1))
        logits = model(tokens)
        tok = int(logits[0, -1].argmax())
        one = [(f"blocks.{L // 2}.hook_resid_post", lambda x, hook: x)]
        fns = {"forward": lambda: model(tokens), "run_with_cache (all hooks)": lambda: model.run_with_cache(tokens),
               "run_with_hooks (one hook)": lambda: model.run_with_hooks(tokens, fwd_hooks=one)}
        times = time_interleaved(fns, repeats=reps, warmup=1)
        fwd = statistics.median(times["forward"])
        fwd_rate = forward_flops(T) / fwd

        def row(case, secs, baseline, base_s, peak, flops=None, target="reference", met=None, note=""):
            rate = f"; FLOP rate ×{flops / secs / fwd_rate:.2f} of forward" if flops else ""
            rows.append({"bench": "realsize", "case": case, "median_s": secs, "baseline": baseline,
                         "baseline_s": base_s, "ratio": secs / base_s, "target": target, "met": met,
                         "note": f"{secs * 1e3:.0f} ms; peak {peak:.0f} MB{rate}{'; ' + note if note else ''}"})
            _log(rows[-1])

        row("load (2024-10 format) vs bare read of the file", statistics.median(t_load["load"]), "pread",
            statistics.median(t_load["read"]), load_peak, note=f"{n_params / 1e6:.0f}M params; "
            f"= ×{statistics.median(t_load['load']) / fwd:.1f} forward")
        for name in fns:
            row(f"{name} at {T} tokens", statistics.median(times[name]), "forward", fwd, peak_mb(fns[name]),
                flops=forward_flops(T), note=f"forward {forward_flops(T) / fwd / 1e9:.0f} GFLOP/s" if name == "forward" else "")
        target = Target.logit(tok)
        for level in (1, 2):
            secs, peak, res = once(lambda level=level: model.decompose(tokens, level=level, target=target))
            row(f"decompose level {level}, one logit, {T} tokens", secs, "forward", fwd, peak,
                note=f"{len(res.nodes)} terms; check max rel err {res.check().max_rel_err:.1e}")
            del res
        secs, peak, graph = once(lambda: attribute(model, tokens[0], targets=tok, max_nodes=64))
        row(f"attribute, 64 rows, {T} tokens", secs, "forward", fwd, peak,
            note=f"check {graph.check().max_rel_err:.1e}")
        del graph

        bt = model.bilinear(L // 2)
        U = model.W_U.T[torch.randperm(VOCAB, generator=torch.Generator().manual_seed(2))[: 8 if quick else 16]]
        t_dense, _, _ = once(lambda: bt.spectra(U[:4], vectors=True))
        t_dense /= 4
        dense_flops = 2 * D * D * H
        for k, meth in ((32, "dense"), (32, "block")):
            secs, peak, _ = once(lambda meth=meth: bt.eig(U[0], k=k, method=meth))
            row(f"eig(u, k={k}) method={meth}", secs, "dense eigh of formed Q_u", t_dense, peak,
                flops=dense_flops if meth == "dense" else None, note="dense FLOPs: formation only")
        # batched top-8 spectra: one chunk of 320 directions (640 product rows at block 2), bench/realsize_spectra.py
        U_many = model.W_U.T[torch.randperm(VOCAB, generator=torch.Generator().manual_seed(3))[: 64 if quick else 320]]
        for r in spectra_rows(bt, U_many.contiguous(), n_dense=2 if quick else 4, reps=1 if quick else 2):
            rows.append(r)
            _log(r)
    return tag_threads(rows)


if __name__ == "__main__":
    main(__doc__, run, ["case", "median_s", "baseline_s", "ratio", "target", "met", "note"])
