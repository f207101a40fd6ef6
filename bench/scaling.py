"""Scaling curves: time and peak memory of forward and run_with_cache as sequence length, d_model and
depth grow, plus (when those packages are present) interaction spectra vs d_model and circuit
decomposition levels vs depth. Writes PNGs to bench/plots/ and returns summary rows.

Model sweeps vary one axis around the base case of bench/forward.py (2 layers, d_model 256, 4 heads
of 64, d_mlp 4·d_model, d_vocab 1000, batch 8 x 128, LayerNorm); d_model keeps d_head 64. Time is the
minimum over interleaved repeats (plain module, forward, run_with_cache of every hook); memory is the
peak RSS delta of one call in a separate process (bench/_memory.py).

    python bench/scaling.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import machine, main, time_interleaved  # noqa: E402
from _memory import measure  # noqa: E402
from forward import build  # noqa: E402

PLOTS = BENCH / "plots"
BASE = {"n_layers": 2, "d_model": 256, "seq": 128}
MiB = 2**20


def axes(quick: bool) -> dict[str, list[int]]:
    if quick:
        return {"seq": [32, 128, 512], "d_model": [128, 256, 512], "n_layers": [1, 2, 4]}
    return {"seq": [32, 64, 128, 256, 512], "d_model": [128, 256, 512, 768, 1024], "n_layers": [1, 2, 4, 8]}


def _point(axis: str, value: int) -> tuple[dict, int]:
    p = {**BASE, axis: value}
    d = p["d_model"]
    model_kw = {"n_layers": p["n_layers"], "d_model": d, "n_heads": d // 64, "d_mlp": 4 * d,
                "n_ctx": max(128, p["seq"])}
    return model_kw, p["seq"]


def model_curves(quick: bool) -> dict:
    """{axis: {"x": [...], "plain_s", "forward_s", "cache_s": [...], "forward_mib", "cache_mib", "cached_mib"}}."""
    repeats = 3 if quick else 7
    curves = {}
    specs = []
    for axis, values in axes(quick).items():
        c = curves[axis] = {"x": values, "plain_s": [], "forward_s": [], "cache_s": []}
        for v in values:
            model_kw, seq = _point(axis, v)
            model, plain = build(**model_kw)
            tokens = torch.randint(0, model.cfg.d_vocab, (8, seq), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                t = time_interleaved({"plain": lambda: plain(tokens), "forward": lambda: model(tokens),
                                      "cache": lambda: model.run_with_cache(tokens)}, repeats=repeats, warmup=1)
            for k in ("plain", "forward", "cache"):  # min: the curve is about cost, not contention
                c[f"{k}_s"].append(min(t[k]))
            for op in ("forward", "run_with_cache"):
                specs.append({"model": model_kw, "batch": 8, "seq": seq, "op": op, "axis": axis, "x": v})
            print(f"  {axis}={v}: plain {c['plain_s'][-1] * 1e3:.1f} ms, forward {c['forward_s'][-1] * 1e3:.1f} ms,"
                  f" run_with_cache {c['cache_s'][-1] * 1e3:.1f} ms", flush=True)
    mem = measure(specs)
    for axis, c in curves.items():
        fwd = {r["x"]: r for r in mem if r["axis"] == axis and r["op"] == "forward"}
        rwc = {r["x"]: r for r in mem if r["axis"] == axis and r["op"] == "run_with_cache"}
        c["forward_mib"] = [fwd[v]["peak_bytes"] / MiB for v in c["x"]]
        c["cache_mib"] = [rwc[v]["peak_bytes"] / MiB for v in c["x"]]
        c["cached_mib"] = [(rwc[v]["result_bytes"] - fwd[v]["result_bytes"]) / MiB for v in c["x"]]
    return curves


def _best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def spectra_curve(quick: bool) -> dict | None:
    """Time of one interaction matrix Q_u, its eigendecomposition, and spectra of 64 directions, vs d_model."""
    try:
        from hooked_bilinear.tensor import BilinearTensor
    except ImportError as exc:
        print(f"  spectra: skipped ({exc})")
        return None
    values = [64, 128, 256] if quick else [64, 128, 256, 512, 768]
    out = {"x": values, "interaction_s": [], "eig_s": [], "spectra64_s": []}
    g = torch.Generator().manual_seed(0)
    for d in values:
        model, _ = build(n_layers=1, d_model=d, n_heads=max(1, d // 64), d_mlp=4 * d)
        bt = BilinearTensor.from_layer(model.blocks[0].mlp)
        U = torch.randn(64, d, generator=g)
        with torch.no_grad():
            out["interaction_s"].append(_best_of(lambda: bt.interaction(U[0]), 3))
            out["eig_s"].append(_best_of(lambda: bt.eig(U[0]), 3))
            out["spectra64_s"].append(_best_of(lambda: bt.spectra(U), 1 if d > 256 else 2))
        print(f"  spectra d_model={d}: Q_u {out['interaction_s'][-1] * 1e3:.2f} ms, eig {out['eig_s'][-1] * 1e3:.1f} ms,"
              f" 64 spectra {out['spectra64_s'][-1] * 1e3:.1f} ms", flush=True)
    return out


def circuits_curve(quick: bool) -> dict | None:
    """Time and number of terms of decompose(level=1) and decompose(level=2) vs depth (small model)."""
    try:
        from hooked_bilinear.circuits import decompose
    except ImportError as exc:
        print(f"  circuits: skipped ({exc})")
        return None
    values = [1, 2, 3] if quick else [1, 2, 3, 4, 6]
    out = {"x": values, "level1_s": [], "level2_s": [], "level1_terms": [], "level2_terms": []}
    tokens = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0))
    for n in values:
        model, _ = build(n_layers=n, d_model=64, n_heads=4, d_mlp=256, d_vocab=100, n_ctx=16)
        for level in (1, 2):
            result = decompose(model, tokens, level=level, target=7)
            out[f"level{level}_terms"].append(len(result))
            out[f"level{level}_s"].append(_best_of(lambda: decompose(model, tokens, level=level, target=7),
                                                   2 if quick else 3))
        print(f"  circuits n_layers={n}: level 1 {out['level1_terms'][-1]} terms {out['level1_s'][-1] * 1e3:.1f} ms,"
              f" level 2 {out['level2_terms'][-1]} terms {out['level2_s'][-1] * 1e3:.1f} ms", flush=True)
    return out


def _slope(x, y) -> float:
    """Least-squares exponent of y ~ x^k on a log-log scale."""
    import math

    lx, ly = [math.log(v) for v in x], [math.log(max(v, 1e-12)) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


LABELS = {"seq": "sequence length (batch 8)", "d_model": "d_model (d_mlp = 4 d_model)", "n_layers": "layers"}


def _ticks(a, x) -> None:
    from matplotlib.ticker import NullFormatter

    a.set_xticks(x)
    a.set_xticklabels([str(v) for v in x])
    a.xaxis.set_minor_formatter(NullFormatter())


def plot_model(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(14, 8))
    for j, (axis, c) in enumerate(curves.items()):
        a = ax[0, j]
        for key, label, style in (("plain_s", "plain module", "k:"), ("forward_s", "forward", "C0-o"),
                                  ("cache_s", "run_with_cache (all hooks)", "C1-s")):
            a.plot(c["x"], [t * 1e3 for t in c[key]], style, label=label)
        a.set(xscale="log", yscale="log", xlabel=LABELS[axis], ylabel="time per call (ms)",
              title=f"time vs {axis} (forward ∝ x^{_slope(c['x'], c['forward_s']):.2f})")
        _ticks(a, c["x"])
        a.legend(fontsize=8)
        b = ax[1, j]
        b.plot(c["x"], c["forward_mib"], "C0-o", label="forward peak")
        b.plot(c["x"], c["cache_mib"], "C1-s", label="run_with_cache peak")
        b.plot(c["x"], [f + k for f, k in zip(c["forward_mib"], c["cached_mib"])], "C1:", label="forward peak + cached")
        b.set(xscale="log", yscale="log", xlabel=LABELS[axis], ylabel="peak RSS delta (MiB)", title=f"memory vs {axis}")
        _ticks(b, c["x"])
        b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_analysis(spectra: dict | None, circuits: dict | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    if spectra:
        for key, label, style in (("interaction_s", "one Q_u (interaction)", "C0-o"), ("eig_s", "eig of one Q_u", "C1-s"),
                                  ("spectra64_s", "spectra of 64 directions", "C2-^")):
            ax[0].plot(spectra["x"], [t * 1e3 for t in spectra[key]], style, label=label)
        ax[0].set(xscale="log", yscale="log", xlabel="d_model (d_mlp = 4 d_model)", ylabel="time (ms)",
                  title="bilinear tensor: interaction spectra vs d_model")
        _ticks(ax[0], spectra["x"])
        ax[0].legend(fontsize=8)
    if circuits:
        for level, style in ((1, "C0-o"), (2, "C1-s")):
            ax[1].plot(circuits["x"], [t * 1e3 for t in circuits[f"level{level}_s"]], style,
                       label=f"level {level} (terms: {', '.join(map(str, circuits[f'level{level}_terms']))})")
        ax[1].set(yscale="log", xlabel="layers (d_model 64, 16 tokens)", ylabel="time (ms)",
                  title="circuits: decompose level 1 / 2 vs depth")
        ax[1].legend(fontsize=8)
        ax[1].set_xticks(circuits["x"])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False) -> list[dict]:
    PLOTS.mkdir(exist_ok=True)
    torch.manual_seed(0)
    curves = model_curves(quick)
    model_png = PLOTS / "scaling_model.png"
    title = f"CPU float32, {machine()}" + (" (QUICK run, loaded machine possible: not final)" if quick else "")
    plot_model(curves, model_png, "HookedBilinearTransformer scaling, " + title)
    rel = lambda p: str(p.relative_to(BENCH.parent))  # noqa: E731  paths relative to the repo root
    rows = []
    for axis, c in curves.items():
        x = c["x"][-1]
        for key, label in (("forward_s", "forward"), ("cache_s", "run_with_cache (all hooks)")):
            rows.append({"bench": "scaling", "case": f"{axis}={x}: {label} / plain", "ratio": c[key][-1] / c["plain_s"][-1],
                         "median_s": c[key][-1], "target": "info", "plot": rel(model_png), "baseline": "plain module (min over repeats)",
                         "note": f"time ∝ {axis}^{_slope(c['x'], c[key]):.2f} over {c['x']}"})
        rows.append({"bench": "scaling", "case": f"{axis}={x}: run_with_cache peak / (forward peak + cached)",
                     "ratio": c["cache_mib"][-1] / (c["forward_mib"][-1] + c["cached_mib"][-1]), "target": "<= 1.1",
                     "plot": rel(model_png),
                     "note": f"{c['cache_mib'][-1]:.0f} MiB peak, {c['cached_mib'][-1]:.0f} MiB cached; "
                             f"peak ∝ {axis}^{_slope(c['x'], c['cache_mib']):.2f}"})
    spectra, circuits = spectra_curve(quick), circuits_curve(quick)
    if spectra or circuits:
        analysis_png = PLOTS / "scaling_analysis.png"
        plot_analysis(spectra, circuits, analysis_png, "best of repeats, " + title)
        if spectra:
            rows.append({"bench": "scaling", "case": f"spectra of 64 directions, d_model={spectra['x'][-1]}",
                         "ratio": None, "median_s": spectra["spectra64_s"][-1], "target": "info", "plot": rel(analysis_png),
                         "note": f"time ∝ d_model^{_slope(spectra['x'], spectra['spectra64_s']):.2f}; one Q_u ∝ "
                                 f"d_model^{_slope(spectra['x'], spectra['interaction_s']):.2f}"})
        if circuits:
            for level in (1, 2):
                rows.append({"bench": "scaling", "case": f"decompose level {level}, n_layers={circuits['x'][-1]}",
                             "ratio": None, "median_s": circuits[f"level{level}_s"][-1], "target": "info",
                             "plot": rel(analysis_png),
                             "note": f"{circuits[f'level{level}_terms'][-1]} terms; terms over depth "
                                     f"{circuits['x']}: {circuits[f'level{level}_terms']}"})
    return rows


if __name__ == "__main__":
    main(__doc__, run, ["case", "ratio", "median_s", "target", "note"])
