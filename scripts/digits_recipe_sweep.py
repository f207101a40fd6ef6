"""Measure the digits classifier's eigenvector claims of Pearce et al. across recipes and seeds.

For each recipe (input-noise scale, weight decay, width) it trains `--seeds` models on sklearn's 8×8
digits (the zoo split) and prints: test accuracy, the top positive eigenvectors' cross-seed |cos|,
their roughness (`train.digits_eigen.roughness`, lower = smoother), the share of their squared norm
on dead pixels (std < 0.05 over the training images), and the accuracy with the top-k eigenvectors.

Usage: `python scripts/digits_recipe_sweep.py [--seeds 4] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hooked_bilinear.train.digits_eigen import cross_seed_cosine, roughness, top_eigenvectors, topk_accuracy
from hooked_bilinear.train.recipes import train_digits_model
from hooked_bilinear.train.tasks import digits

RECIPES = {  # name: (noise scale, weight decay, d_hidden)
    "no noise, wd 0.1": (0.0, 0.1, 64),
    "no noise, wd 1.0": (0.0, 1.0, 64),
    "noise 0.5, wd 0.1": (0.5, 0.1, 64),
    "noise 0.5, wd 1.0": (0.5, 1.0, 64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_set, test_set = digits(test_fraction=0.2, seed=0)
    dead = train_set["images"].std(0) < 0.05
    ks = (1, 2, 3, 5, 10, 64)
    for name, (noise, wd, width) in RECIPES.items():
        start = time.perf_counter()
        models = [train_digits_model(seed=s, noise=noise, weight_decay=wd, d_hidden=width)[0] for s in range(args.seeds)]
        vecs = [top_eigenvectors(m) for m in models]
        acc = [topk_accuracy(m, test_set, ks) for m in models]
        row = {
            "recipe": name,
            "test_accuracy": round(sum(a[64 if width >= 64 else width] for a in acc) / len(acc), 4),
            "cross_seed_cos": round(float(cross_seed_cosine(vecs).mean()), 3),
            "roughness": round(float(torch.stack([roughness(v.reshape(-1, 8, 8)) for v in vecs]).mean()), 3),
            "dead_pixel_share": round(float(torch.stack([v[:, dead].square().sum(-1) for v in vecs]).mean()), 3),
            "topk_accuracy": {k: round(sum(a[k] for a in acc) / len(acc), 4) for k in ks if k <= width},
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
