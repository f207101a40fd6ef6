"""Node bases a feature card can describe: neurons, dictionary features, eigenvectors of a Q_u, directions.

A `NodeBasis` reads one hook and maps its activation [N, d] to node activations [N, n]; `out_dirs`
([n, d_model], optional) are the residual directions the nodes write, used for top/bottom logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


@dataclass
class NodeBasis:
    """Nodes read off one hook: `acts(x [N, d]) -> [N, n]`.

    Attributes:
        name: identifier written as circuit-tracer's `transcoder_id` / scan name.
        hook_name: the activation the nodes read.
        acts: the map from that activation to node activations.
        n: number of nodes.
        out_dirs: [n, d_model] residual directions the nodes write (None: no logit lists).
    """

    name: str
    hook_name: str
    acts: Callable[[Tensor], Tensor]
    n: int
    out_dirs: Optional[Tensor] = None


def neuron_basis(model, layer: int) -> NodeBasis:
    """The d_mlp neurons of MLP `layer` (`mlp.hook_post`), writing `W_out[layer]` rows."""
    return NodeBasis(f"{model.cfg.model_name}-L{layer}-neurons", f"blocks.{layer}.mlp.hook_post", lambda x: x,
                     model.cfg.d_mlp, model.W_out[layer].detach())


def sae_basis(model, sae) -> NodeBasis:
    """The features of a dictionary; they write their decoder rows when those live in the residual width."""
    out = sae.W_dec.detach() if sae.cfg.d_out == model.cfg.d_model else None
    return NodeBasis(f"{sae.cfg.model_name}-{sae.cfg.hook_name}".replace("/", "-"), sae.cfg.hook_name,
                     lambda x: sae.encode(x), sae.cfg.d_sae, out)


def eigen_basis(model, layer: int, u: Tensor, k: int = 8, name: Optional[str] = None) -> NodeBasis:
    """The top-|λ| `k` eigenvectors of Q_u at MLP `layer`: node i is `λ_i (v_i·x)²` on the MLP input."""
    eig = model.bilinear(layer).eig(u.detach(), k=k)
    values, vectors = eig.values, eig.vectors  # [k], [d, k]
    hook = f"blocks.{layer}.ln2.hook_normalized" if model.blocks[layer].ln2 is not None else f"blocks.{layer}.hook_mlp_in"
    return NodeBasis(name or f"{model.cfg.model_name}-L{layer}-eig", hook,
                     lambda x: values * (x.to(vectors.dtype) @ vectors) ** 2, int(values.shape[0]),
                     None)


def direction_basis(name: str, hook_name: str, directions: Tensor) -> NodeBasis:
    """Projections `x · directions[i]` of the activation at `hook_name` ([n, d] directions)."""
    if directions.ndim != 2:
        raise InputError(f"directions must be [n, d], got {tuple(directions.shape)}")
    return NodeBasis(name, hook_name, lambda x: x @ directions.T, directions.shape[0], None)
