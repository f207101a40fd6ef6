"""Plots of path decompositions. Each returns a matplotlib Figure built without pyplot's global state."""

from __future__ import annotations

import numpy as np


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_top(decomp, k: int = 20, figsize=None, title: str | None = None):
    """Horizontal bars of the k largest terms (blue pushes the target up, red down)."""
    top = decomp.top(k)
    key = decomp._sort_key()
    vals = top[key].to_numpy(dtype=float)[::-1]
    # ∑ marks a term that is a sum of finer paths (expandable)
    labels = [("∑ " if rem else "") + lab for lab, rem in zip(top["label"], top["expandable"])][::-1]
    fig = _figure(figsize or (7, 0.3 * len(vals) + 1.2))
    ax = fig.add_subplot()
    colors = ["tab:blue" if v >= 0 else "tab:red" for v in vals]
    ax.barh(np.arange(len(vals)), vals, color=colors)
    ax.set_yticks(np.arange(len(vals)), labels, fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("contribution to target" if key == "contribution" else "residual norm")
    ax.set_title(title or f"top {len(vals)} of {len(decomp)} terms ({decomp.description})", fontsize=9)
    return fig


def plot_pair_table(decomp, layer: int, figsize=None, title: str | None = None):
    """Heatmap of MLP `layer`'s symmetric pair table (diverging colours centred on zero)."""
    table = decomp.pair_table(layer)
    data = table.to_numpy()
    K = data.shape[0]
    fig = _figure(figsize or (0.35 * K + 2.5, 0.35 * K + 2))
    ax = fig.add_subplot()
    vmax = float(np.abs(data).max()) or 1.0
    cmap = "RdBu" if decomp.has_target else "viridis"
    vmin = -vmax if decomp.has_target else 0.0
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(np.arange(K), table.columns, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(K), table.index, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title or f"mlp{layer} input pairs ({decomp.description})", fontsize=9)
    return fig
