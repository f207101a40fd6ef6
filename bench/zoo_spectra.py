"""Top-8 spectra on TRAINED weights: the bundled zoo models, every bilinear layer, vs random weights.

For each layer of each zoo model (``list_zoo()``), the output directions are the unembedding rows
(``W_U`` columns; for the digits classifier the 10 class directions). Per layer: block products a
direction (``tol=1e-4``, values only and with vectors), block vs dense time (dense ``eigh`` /
``eigvalsh`` of every formed Q_u, interleaved, torch's threads, wall time), top-8 |λ| max relative
error vs float64 dense, and the spectrum's gaps: median over directions of the smallest relative gap
min_i (|λ_i| − |λ_i+1|)/|λ_1| among the top 9, and of the k-th gap (|λ_8| − |λ_9|)/|λ_1|. The same
is measured on random weights of the layer's shape and scale (Gaussian, matching each factor's std).

    python bench/zoo_spectra.py [--quick] [--threads N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main, tag_threads  # noqa: E402
from realsize_spectra import K, TOL, count_products  # noqa: E402


def gaps(bt, U: torch.Tensor) -> tuple[float, float]:
    """(median smallest relative gap among the top 9 |λ|, median k-th gap), float64 dense."""
    bt64 = bt.to(torch.float64)
    small, kth = [], []
    for u in U:
        a = torch.linalg.eigvalsh(bt64.interaction(u.double())).abs().sort(descending=True).values[: K + 1]
        g = (a[:-1] - a[1:]) / a[0]
        small.append(float(g.min()))
        kth.append(float(g[-1]))
    return statistics.median(small), statistics.median(kth)


def layer_row(name: str, bt, U: torch.Tensor, reps: int) -> dict:
    fns = {"eigh": lambda: bt.spectra(U, vectors=True), "block vectors":
           lambda: bt.spectra(U, top=K, method="block", vectors=True, tol=TOL),
           "eigvalsh": lambda: bt.spectra(U), "block values": lambda: bt.spectra(U, top=K, method="block", tol=TOL)}
    times: dict[str, list[float]] = {n: [] for n in fns}
    out = {}
    for _ in range(reps):
        for n, fn in fns.items():
            t0 = time.perf_counter()
            out[n] = fn()
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    bt64 = bt.to(torch.float64)
    ref = torch.stack([torch.linalg.eigvalsh(bt64.interaction(u.double())).abs().sort(descending=True).values[:K]
                       for u in U])
    err = float(((out["block values"].values.double().abs() - ref).abs() / ref).max())
    small, kth = gaps(bt, U[:64])
    pv, pvec = count_products(bt, U, tol=TOL), count_products(bt, U, tol=TOL, vectors=True)
    return {"bench": "zoo_spectra", "case": name, "median_s": med["block values"] / U.shape[0],
            "baseline": "dense eigvalsh", "baseline_s": med["eigvalsh"] / U.shape[0],
            "ratio": med["eigvalsh"] / med["block values"], "target": "reference", "met": None,
            "note": f"d {bt.d_in}, m {bt.d_mlp}, {U.shape[0]} dirs; products values {pv:.0f} / vectors {pvec:.0f} "
                    f"(block-vectors vs eigh ×{med['eigh'] / med['block vectors']:.2f}); err {err:.1e}; "
                    f"gaps: smallest {small:.1e}, 8th {kth:.1e}"}


def random_like(bt, seed: int = 0):
    from hooked_bilinear.tensor import BilinearTensor

    g = torch.Generator().manual_seed(seed)
    r = lambda t: None if t is None else torch.randn(t.shape, generator=g) * t.std()  # noqa: E731
    return BilinearTensor(r(bt.W_l), r(bt.W_r), r(bt.W_out))


def run(quick: bool = False) -> list[dict]:
    from hooked_bilinear.loading import load_pretrained
    from hooked_bilinear.zoo import list_zoo

    rows = []
    with torch.no_grad():
        for entry in list_zoo():
            model = load_pretrained(entry["name"])
            n_layers = model.cfg.n_layers
            for layer in range(n_layers):
                try:
                    bt = model.bilinear(layer).interaction_part
                except Exception as e:  # attention-only or gated layers have no tensor
                    print(f"[zoo_spectra] {entry['name']} L{layer}: {e}", file=sys.stderr)
                    continue
                if hasattr(model, "W_U") and bt.d_out == model.W_U.shape[0]:
                    U = model.W_U.T[: 64 if quick else 256].contiguous()
                else:
                    U = torch.eye(bt.d_out, dtype=bt.dtype)[: 64 if quick else 256]
                if bt.d_in < 2 * K:
                    continue
                reps = 1 if quick else 3
                rows.append(layer_row(f"{entry['name']} L{layer} (trained)", bt, U, reps))
                rows.append(layer_row(f"{entry['name']} L{layer} (random, same shape)", random_like(bt), U, reps))
                print(f"[zoo_spectra] {rows[-2]['case']}: {rows[-2]['note']}\n  random: {rows[-1]['note']}",
                      file=sys.stderr, flush=True)
    return tag_threads(rows)


if __name__ == "__main__":
    main(__doc__, run, ["case", "median_s", "baseline_s", "ratio", "note"])
