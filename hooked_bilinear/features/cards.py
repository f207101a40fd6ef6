"""Feature cards for any node basis, written in circuit-tracer's feature-file format.

One pass over the corpus (batches of windows, progress bar) keeps, per node: the `n_examples`
windows with the largest activation, the activation count, min and max, and a bounded sample of
activations (for the histogram and quantiles). The top windows are then re-run to record every
token's activation. `write_feature_files` writes `features/<scan>/<n>.json` with circuit-tracer's
`frontend/feature_models.Model` fields: `transcoder_id`, `index`, `examples_quantiles`
[{`quantile_name`, `examples`: [{`tokens_acts_list`, `train_token_ind`, `is_repeated_datapoint`,
`tokens`}]}], `top_logits`, `bottom_logits`, `act_min`, `act_max`, `quantile_values`, `histogram`,
`activation_frequency`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError
from hooked_bilinear.features.bases import NodeBasis
from hooked_bilinear.features.corpus import corpus_tokens

QUANTILES = (0.5, 0.9, 0.99)
HIST_BINS = 32


@torch.no_grad()
def feature_cards(model, basis: NodeBasis, corpus: Any, nodes: Optional[Sequence[int]] = None, n_examples: int = 8,
                  context: int = 16, n_logits: int = 8, batch_windows: int = 16, text_column: str = "text",
                  max_windows: Optional[int] = None, sample_rows: int = 4096, seed: int = 0,
                  progress: bool = True) -> list[dict]:
    """One card per node: max-activating contexts, top/bottom logits, activation histogram.

    Args:
        model: the hooked model. basis: a `NodeBasis` (see `features.bases`).
        corpus: a token tensor [n, pos], a text file, a list of strings or a local `datasets.Dataset`.
        nodes: which nodes (default all).
        n_examples: max-activating windows per node; context: tokens kept before and after the max.
        n_logits: tokens in the top and bottom logit lists (needs `basis.out_dirs` and a tokenizer).
        batch_windows: windows per forward pass. sample_rows: positions kept for histograms.

    Returns:
        Dicts with the circuit-tracer `Model` fields (validated by `write_feature_files`).
    """
    from hooked_bilinear.model.validation import check_hook_names
    from hooked_bilinear.progress import tqdm

    check_hook_names([basis.hook_name], model.hook_dict)
    tokens = corpus_tokens(corpus, model, text_column=text_column, max_windows=max_windows)
    nodes = torch.arange(basis.n) if nodes is None else torch.as_tensor(list(nodes), dtype=torch.long)
    if nodes.numel() == 0 or int(nodes.min()) < 0 or int(nodes.max()) >= basis.n:
        raise InputError(f"nodes must be indices in [0, {basis.n}), got {nodes.tolist()[:8]}")
    n, W = nodes.numel(), tokens.shape[0]
    top_val = torch.full((n_examples, n), float("-inf"))
    top_win = torch.zeros((n_examples, n), dtype=torch.long)
    count = torch.zeros(n)
    lo, hi = torch.full((n,), float("inf")), torch.full((n,), float("-inf"))
    g = torch.Generator().manual_seed(seed)
    samples, kept = [], 0
    positions = 0
    for start in tqdm(range(0, W, batch_windows), desc=f"cards {basis.name}", disable=not progress):
        acts = _acts(model, basis, tokens[start:start + batch_windows], nodes)  # [b, pos, n]
        b, p = acts.shape[:2]
        flat = acts.reshape(-1, n)
        positions += flat.shape[0]
        count += (flat != 0).sum(0)
        lo, hi = torch.minimum(lo, flat.min(0).values), torch.maximum(hi, flat.max(0).values)
        win_max = acts.max(1).values  # [b, n]
        vals = torch.cat([top_val, win_max])
        wins = torch.cat([top_win, torch.arange(start, start + b)[:, None].expand(b, n)])
        best = vals.topk(min(n_examples, vals.shape[0]), dim=0)
        top_val, top_win = best.values, wins.gather(0, best.indices)
        if kept < sample_rows:
            take = torch.randperm(flat.shape[0], generator=g)[: min(sample_rows - kept, max(1, sample_rows // 8))]
            samples.append(flat[take])
            kept += take.numel()
    sample = torch.cat(samples)
    logits = _logit_lists(model, basis, nodes, n_logits)
    examples = _top_examples(model, basis, tokens, nodes, top_val, top_win, context, batch_windows)
    cards = []
    for j, node in enumerate(nodes.tolist()):
        col = sample[:, j]
        active = col[col != 0]
        a_min, a_max = float(lo[j]), float(hi[j])
        hist = torch.histc(active, bins=HIST_BINS, min=a_min, max=a_max) if active.numel() and a_max > a_min \
            else torch.zeros(HIST_BINS)
        quant = torch.quantile(active, torch.tensor(QUANTILES, dtype=active.dtype)).tolist() if active.numel() else \
            [0.0] * len(QUANTILES)
        cards.append({"transcoder_id": basis.name, "index": node,
                      "examples_quantiles": [{"quantile_name": "Top activations", "examples": examples[j]}],
                      "top_logits": logits[j][0], "bottom_logits": logits[j][1], "act_min": a_min, "act_max": a_max,
                      "quantile_values": [float(q) for q in quant], "histogram": hist.tolist(),
                      "activation_frequency": float(count[j] / positions)})
    return cards


def _acts(model, basis: NodeBasis, batch: Tensor, nodes: Tensor) -> Tensor:
    _, cache = model.run_with_cache(batch, names_filter=[basis.hook_name], return_type=None)
    x = cache[basis.hook_name]
    out = basis.acts(x.reshape(-1, x.shape[-1]))
    if out.ndim != 2 or out.shape[-1] != basis.n:
        raise InputError(f"basis {basis.name!r} returned shape {tuple(out.shape)}; expected [N, n={basis.n}]")
    return out[:, nodes].reshape(*x.shape[:2], -1).float()


def _top_examples(model, basis: NodeBasis, tokens: Tensor, nodes: Tensor, top_val: Tensor, top_win: Tensor,
                  context: int, batch_windows: int) -> list[list[dict]]:
    """Per node, its top windows (activation > 0) with every token's activation, cut around the peak.

    Each distinct window is run once, in batches, for all nodes that keep it."""
    keep = torch.isfinite(top_val) & (top_val > 0)  # [e, n]
    windows = sorted(set(top_win[keep].tolist()))
    out: list[list[Optional[dict]]] = [[None] * top_val.shape[0] for _ in range(nodes.numel())]
    for start in range(0, len(windows), batch_windows):
        ids = windows[start:start + batch_windows]
        acts = _acts(model, basis, tokens[ids], nodes)  # [b, pos, n]
        where = {w: i for i, w in enumerate(ids)}
        strs = {w: _str_tokens(model, tokens[w]) for w in ids}  # decoded once per window
        for e, j in keep.nonzero().tolist():
            w = int(top_win[e, j])
            if w in where:
                out[j][e] = _example(strs[w], acts[where[w], :, j], context)
    return [[ex for ex in row if ex is not None] for row in out]


def _str_tokens(model, window: Tensor) -> list[str]:
    return list(model.to_str_tokens(window)) if model.tokenizer is not None else [str(t) for t in window.tolist()]


def _example(strs: list[str], acts: Tensor, context: int) -> dict:
    peak = int(acts.argmax())
    lo, hi = max(0, peak - context), min(len(strs), peak + context + 1)
    return {"tokens_acts_list": acts[lo:hi].tolist(), "train_token_ind": peak - lo, "is_repeated_datapoint": False,
            "tokens": strs[lo:hi]}


def _logit_lists(model, basis: NodeBasis, nodes: Tensor, k: int) -> list[tuple[list[str], list[str]]]:
    if basis.out_dirs is None or k == 0:
        return [([], []) for _ in range(nodes.numel())]
    effect = basis.out_dirs[nodes].to(model.W_U.dtype) @ model.W_U.detach()  # [n, d_vocab]: direct logit effect
    top, bottom = effect.topk(k, dim=-1).indices, (-effect).topk(k, dim=-1).indices

    def names(ids):
        return list(model.to_str_tokens(ids)) if model.tokenizer is not None else [str(i) for i in ids.tolist()]

    return [(names(top[i]), names(bottom[i])) for i in range(nodes.numel())]


def feature_number(layer: int, index: int) -> int:
    """circuit-tracer's feature number of (layer, index): the Cantor pairing its viewer unpairs."""
    return (layer + index) * (layer + index + 1) // 2 + index


def viewer_scan(scan: str) -> str:
    """The `scan` to give `graphs.to_circuit_tracer(..., scan=...)` so that circuit-tracer's viewer, served
    locally by `graphs.serve(out_dir)`, reads this basis's cards from `out_dir/features/<scan>/` (a scan
    starting with "./" is read as a local path; "./features/" itself is redirected to Anthropic's CDN)."""
    return f"./graph_data/features/{scan}"


def write_feature_files(cards: list[dict], folder: Union[str, os.PathLike], scan: Optional[str] = None,
                        layer: Optional[int] = None) -> list[Path]:
    """Write each card to `folder/features/<scan>/<n>.json`, where circuit-tracer's viewer reads them.

    Args:
        cards: from `feature_cards`. folder: the graph output folder (what `graphs.serve` serves).
        scan: the folder name (default: the cards' `transcoder_id`); pass `viewer_scan(scan)` to
            `to_circuit_tracer` so the graph's nodes open these cards.
        layer: name files by circuit-tracer's feature number `feature_number(layer, index)` (what a
            graph node of that layer and index asks for); None names them by `index`.

    Cards are checked against circuit-tracer's field list (its pydantic schema in the tests).
    """
    paths = []
    for card in cards:
        _validate(card)
        number = card["index"] if layer is None else feature_number(layer, card["index"])
        out = Path(folder) / "features" / (scan or card["transcoder_id"]) / f"{number}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(card))
        paths.append(out)
    return paths


FIELDS = {"transcoder_id": str, "index": int, "examples_quantiles": list, "top_logits": list, "bottom_logits": list,
          "act_min": float, "act_max": float, "quantile_values": list, "histogram": list,
          "activation_frequency": float}


def _validate(card: dict) -> None:
    missing = sorted(set(FIELDS) - set(card))
    wrong = [k for k, t in FIELDS.items() if k in card and not isinstance(card[k], t)]
    if missing or wrong:
        raise InputError(f"feature card is missing {missing} / has wrongly typed {wrong}")
