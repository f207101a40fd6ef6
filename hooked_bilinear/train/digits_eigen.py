"""What Pearce et al. claim about image-classifier eigenvectors, measured on a `HookedBilinearMLP`.

- `top_eigenvectors`: each class's top positive eigenvector of Q_c (Q for the class logit), in
  pixel space (W_E v, unit norm, sign fixed so that its largest-|.| pixel is positive).
- `cross_seed_cosine`: |cos| between the same class's top eigenvectors of models trained with
  different seeds ([P] Fig. 5A reports 0.8-0.9 on MNIST).
- `roughness`: the Dirichlet energy Σ_{neighbours} (v_i − v_j)² / Σ v_i² of an image (0 for a constant
  image; about 2 × edges / pixels = 3.5 for white noise on 8×8), i.e. how far from spatially smooth.
- `topk_accuracy`: accuracy when each logit keeps only its top-k eigenvectors by |λ| ([P] Fig. 5B).
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_bilinear.train.losses import Batch


@torch.no_grad()
def top_eigenvectors(model, sign: int = 1) -> Float[Tensor, "n_classes d_input"]:
    """Top eigenvector of each class logit's Q with eigenvalue of `sign` (+1 or -1), in pixel space.

    Returns:
        [n_classes, d_input], each row `W_E v / ‖W_E v‖` with its largest-magnitude entry positive.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    n = model.cfg.n_classes
    spectra = model.bilinear().spectra(torch.eye(n, dtype=model.W_U.dtype), vectors=True)
    rows = []
    for c in range(n):
        i = int(torch.nonzero(spectra.values[c] * sign > 0)[0])  # values are sorted by |λ|
        v = model.W_E @ spectra.vectors[c][:, i]
        v = v / v.norm()
        rows.append(v * torch.sign(v[v.abs().argmax()]))
    return torch.stack(rows)


def cross_seed_cosine(vectors: Sequence[Tensor]) -> Float[Tensor, "n_classes"]:
    """Mean over model pairs of |cos| between the same class's vectors ([n_classes, d] per model)."""
    if len(vectors) < 2:
        raise ValueError(f"cross_seed_cosine needs at least two models' vectors, got {len(vectors)}")
    pairs = [(a / a.norm(dim=-1, keepdim=True) * (b / b.norm(dim=-1, keepdim=True))).sum(-1).abs()
             for a, b in combinations(vectors, 2)]
    return torch.stack(pairs).mean(0)


def roughness(images: Float[Tensor, "*batch h w"]) -> Float[Tensor, "*batch"]:
    """Σ over horizontal and vertical neighbour pairs of (v_i − v_j)², divided by Σ v_i²."""
    if images.ndim < 2:
        raise ValueError(f"roughness needs images [..., h, w], got shape {tuple(images.shape)}")
    dx = (images[..., :, 1:] - images[..., :, :-1]).square().sum((-1, -2))
    dy = (images[..., 1:, :] - images[..., :-1, :]).square().sum((-1, -2))
    return (dx + dy) / images.square().sum((-1, -2))


@torch.no_grad()
def topk_accuracy(model, data: Batch, ks: Sequence[int]) -> dict[int, float]:
    """Test accuracy when logit c is `Σ_{i<k} λ_i (v_i · h)² + b_c` (h = x W_E, top-k by |λ|) for each k."""
    n = model.cfg.n_classes
    h = data["images"].to(model.W_E.dtype) @ model.W_E
    spectra = model.bilinear().spectra(torch.eye(n, dtype=model.W_U.dtype), vectors=True)
    out = {}
    for k in ks:
        logits = torch.stack([spectra[c].reconstruct(h, k) for c in range(n)], -1) + model.b_U
        out[int(k)] = (logits.argmax(-1) == data["labels"]).float().mean().item()
    return out


__all__ = ["cross_seed_cosine", "roughness", "top_eigenvectors", "topk_accuracy"]
