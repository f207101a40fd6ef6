"""Features benchmarks on tiny-lm with its bundled dictionaries (layer 1, d_model 128, d_sae 512), CPU float32.

1. Eigendecompositions of M_u = D Q_u Dᵀ for output features of the MLP-out SAE in the MLP-in SAE's
   basis: our d×d route (`feature_eig`, batched) against the dense baseline (form the [n, n] M_u,
   `eigh`), for the same features. Ratio < 1 means ours is faster.
2. Feature-card throughput (tokens/s) of `feature_cards` over the 512 SAE features against a plain
   forward pass over the same windows (ratio = card time / forward time).

Run: `python bench/features.py [--quick]` (one torch thread; ratios from interleaved repeats).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, one_thread, ratio_stats, time_interleaved  # noqa: E402


def run(quick: bool = False) -> list[dict]:
    from hooked_bilinear import HookedBilinearTransformer, load_sae
    from hooked_bilinear.features.bases import sae_basis
    from hooked_bilinear.features.bundle import eval_tokens
    from hooked_bilinear.features.cards import feature_cards
    from hooked_bilinear.features.interactions import decoder_basis, feature_eig

    model = HookedBilinearTransformer.from_pretrained("tiny-lm")
    sin, sout = load_sae("tiny-lm/L1-mlp-in"), load_sae("tiny-lm/L1-mlp-out")
    B = model.bilinear(1)
    n_feat = 32 if quick else 128
    U = sout.W_enc.detach().T[:n_feat]
    D = decoder_basis(sin, include_bias=True)

    def ours():
        feature_eig(B, sin, U, include_bias=True)

    def dense():
        for u in U:
            torch.linalg.eigh(D @ B.interaction(u) @ D.T)

    windows = eval_tokens(model)[: 8 if quick else 32]
    basis = sae_basis(model, sout)

    def cards():
        feature_cards(model, basis, windows, n_examples=4, progress=False)

    def forward():
        with torch.no_grad():
            model(windows, return_type=None)

    rows = []
    with one_thread():
        t = time_interleaved({"ours": ours, "dense": dense}, repeats=3, warmup=1)
        s = ratio_stats(t["ours"], t["dense"])
        rows.append({"case": f"eig of M_u for {n_feat} output features (n={D.shape[0]}, d={D.shape[1]})", **s,
                     "note": f"dense baseline {ratio_stats(t['dense'], t['dense'])['median_s'] * 1e3:.0f} ms"})
        t = time_interleaved({"cards": cards, "forward": forward}, repeats=3, warmup=1)
        s = ratio_stats(t["cards"], t["forward"])
        n_tok = windows.numel()
        rows.append({"case": f"feature cards, {basis.n} features, {n_tok} tokens", **s,
                     "note": f"{n_tok / s['median_s']:,.0f} tokens/s vs forward "
                             f"{n_tok / ratio_stats(t['forward'], t['forward'])['median_s']:,.0f} tokens/s"})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    for row in run(args.quick):
        print(f"{row['case']}: ratio {row['ratio']:.3f} (spread {row['ratio_min']:.3f}-{row['ratio_max']:.3f}), "
              f"{row['median_s'] * 1e3:.1f} ms; {row['note']}")
