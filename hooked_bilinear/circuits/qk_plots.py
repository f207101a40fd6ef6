"""Plots of score decompositions (matplotlib Figures built without pyplot's global state)."""

from __future__ import annotations

import numpy as np

from hooked_bilinear.circuits.plots import _figure


def plot_score_pairs(decomp, key_pos=None, figsize=None, title: str | None = None):
    """Heatmap of the (query source × key source) table at one key position (diverging, centred on 0)."""
    table = decomp.pair_table(key_pos)
    data = table.to_numpy()
    Sq, Sk = data.shape
    fig = _figure(figsize or (0.35 * Sk + 3, 0.35 * Sq + 2))
    ax = fig.add_subplot()
    vmax = float(np.abs(data).max()) or 1.0
    im = ax.imshow(data, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(Sk), table.columns, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(Sq), table.index, fontsize=7)
    ax.set_xlabel("key-side source")
    ax.set_ylabel("query-side source")
    fig.colorbar(im, ax=ax, shrink=0.8)
    q = decomp.key_pos[decomp._key_index(key_pos)]
    s = decomp.spec
    ax.set_title(title or f"score of head {s.layer}.{s.head}, query {s.query_pos} → key {q}", fontsize=9)
    return fig


def plot_score_row(decomp, k: int = 12, figsize=None, title: str | None = None):
    """The real pattern row (bars) above the k largest pairs' contributions at every key position."""
    frame = decomp.to_frame()
    size = frame.groupby("label")["contribution"].apply(lambda c: c.abs().max())
    labels = list(size.sort_values(ascending=False).index[:k])
    wide = frame[frame["label"].isin(labels)].pivot(index="label", columns="key_pos", values="contribution")
    wide = wide.loc[labels]
    keys = list(decomp.key_pos)
    fig = _figure(figsize or (min(0.3 * len(keys) + 4, 14), 0.3 * len(labels) + 3))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, max(2, len(labels) // 3)])
    top.bar(np.arange(len(keys)), decomp.pattern.mean(0).cpu().numpy(), color="tab:gray")
    top.set_ylabel("pattern")
    data = wide.to_numpy()
    vmax = float(np.abs(data).max()) or 1.0
    im = bottom.imshow(data, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    bottom.set_yticks(np.arange(len(labels)), labels, fontsize=7)
    step = max(1, len(keys) // 24)  # at most ~24 tick labels
    bottom.set_xticks(np.arange(0, len(keys), step), keys[::step], fontsize=7)
    bottom.set_xlabel("key position")
    fig.colorbar(im, ax=bottom, shrink=0.8, label="score contribution")
    s = decomp.spec
    top.set_title(title or f"why head {s.layer}.{s.head} attends from query {s.query_pos}", fontsize=9)
    return fig
