"""`attribute`: exact attribution graphs of a bilinear transformer (spec graphs §1).

circuit-tracer's algorithm with neurons as features and half-gradients as encoders: the logit rows
first, then, batch by batch, the not-yet-explained neurons of highest influence on the targets become
rows, until `max_nodes` rows are explained. Each row keeps its `edges_per_node` largest edges; the
dropped ones are summed, per source layer, into exact remainder nodes, so every row still adds up.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import check_bilinear, freeze, to_tokens
from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.builder import GraphBuilder
from hooked_bilinear.graphs.rows import mlp_hook_names, prompt_run
from hooked_bilinear.graphs.targets import influence_weights, resolve_targets
from hooked_bilinear.model.validation import check_tokens

_ROW_BLOCK_BYTES = 2**30  # dense edges of one batch of rows: [rows, n_layers, n, d_mlp]


def _positive_int(name: str, value, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return value


def _auto_batch(batch_size: Optional[int], n: int, n_layers: int, d_mlp: int, d_model: int, itemsize: int) -> int:
    """Rows per sweep: the dense block [rows, n_layers, n, d_mlp] about the size of a run_with_cache
    (≈ n_layers · n · (12 d_model + 3 d_mlp) values), at least 8 rows, at most 64 and ~1 GiB.

    Measured on tiny-lm at 128 tokens: 64 rows per sweep cost 1.20 s and 87 MiB, 8 rows 1.33 s and 17 MiB.
    """
    if batch_size is not None:
        return batch_size
    per_row = max(1, n_layers * n * max(d_mlp, 1) * itemsize)
    cache = n_layers * n * (12 * d_model + 3 * max(d_mlp, 1)) * itemsize
    rows = max(8, cache // per_row)
    return int(max(1, min(64, rows, _ROW_BLOCK_BYTES // per_row)))


def _token_strings(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return lambda t: str(int(t))

    def s(t) -> str:
        return repr(model.to_string(torch.tensor([int(t)])))
    return s


@torch.no_grad()
def attribute(
    model,
    tokens_or_prompt,
    targets=None,
    *,
    max_nodes: int = 256,
    edges_per_node: int = 64,
    batch_size: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
    basis=None,
    progress: bool = False,
):
    """Exact attribution graph of the model's output on a prompt: zero error nodes.

    Attention patterns and norm scales are frozen at their values in this forward pass (as in
    circuit-tracer); bilinear MLPs need no replacement, so every node's incoming edges sum to its
    value in the real forward pass (`graph.check()`).

    Args:
        model: a HookedBilinearTransformer with bilinear MLPs (or attention only); never modified.
        tokens_or_prompt: a string (with a tokenizer), a list of strings (one graph each, unpadded),
            [pos] or [batch, pos] token ids.
        targets: None (the top tokens at the last position up to cumulative probability 0.95, at most
            10), a token id, a list of ids, or `Target.logit / logit_diff / direction` objects.
        max_nodes: neuron rows to explain (chosen by influence on the targets).
        edges_per_node: edges kept per row; the rest are summed into exact remainder nodes.
        batch_size: rows per backward sweep (default: a dense block about the size of a run_with_cache,
            8 to 64 rows).
        dtype: compute dtype (e.g. torch.float64 for a float32 model).
        basis: an SAE on `blocks.{l}.hook_mlp_out` (or a list, one per block): that block's neurons are
            replaced by the SAE's features, plus one exact error node per position (spec graphs §1.2).
        progress: show a progress bar over row batches.

    Returns:
        An `AttributionGraph` for one prompt, or a list of them for a batch of prompts.

    Raises:
        NotBilinearError: gated MLPs (SwiGLU...). InputError: bad tokens, targets or sizes.

    Example:
        >>> graph = attribute(model, tokens, max_nodes=64)
        >>> graph.check().max_rel_err < 1e-5
        True
        >>> graph.nodes.sort_values("influence", ascending=False).head()
    """
    if isinstance(tokens_or_prompt, (list, tuple)) and tokens_or_prompt and all(isinstance(t, str) for t in tokens_or_prompt):
        # strings of different lengths would be padded, and padding is not a prompt: one graph per string
        return [attribute(model, text, targets, max_nodes=max_nodes, edges_per_node=edges_per_node,
                          batch_size=batch_size, dtype=dtype, basis=basis, progress=progress)
                for text in tokens_or_prompt]
    check_bilinear(model)
    max_nodes = _positive_int("max_nodes", max_nodes)
    edges_per_node = _positive_int("edges_per_node", edges_per_node)
    batch_size = _positive_int("batch_size", batch_size, allow_none=True)
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    single = isinstance(tokens_or_prompt, str) or (isinstance(tokens_or_prompt, Tensor) and tokens_or_prompt.ndim == 1)
    tokens = check_tokens(to_tokens(model, tokens_or_prompt), model.cfg)
    from hooked_bilinear.graphs.basis import basis_layers

    saes = basis_layers(model, basis)
    run = freeze(model, tokens, dtype=dtype, extra_names=mlp_hook_names(model, saes))
    tok_str = _token_strings(model)
    graphs = []
    for b in range(run.batch):
        pr = prompt_run(run, b, saes, model)
        tgts = resolve_targets(targets, pr.logits, b, tok_str)
        rows_per_batch = _auto_batch(batch_size, pr.n, pr.n_layers, max([pr.width(l) for l in range(pr.n_layers)] or [0]),
                                     model.cfg.d_model, pr.logits.element_size())
        builder = GraphBuilder(pr, tgts, influence_weights(tgts, targets is None), edges_per_node,
                               default_targets=targets is None)
        builder.add_logit_rows(rows_per_batch)
        bar = None
        if progress and builder.W:
            from hooked_bilinear.progress import tqdm
            bar = tqdm(total=max_nodes, desc="attribution rows", unit="row")
        while builder.n_neuron_rows < max_nodes:
            picked = builder.next_rows(min(rows_per_batch, max_nodes - builder.n_neuron_rows))
            if picked is None:
                break
            builder.add_neuron_rows(*picked)
            if bar is not None:
                bar.update(len(picked[0]))
        if bar is not None:
            bar.close()
        graphs.append(builder.graph(model, tok_str, max_nodes=max_nodes))
    return graphs[0] if single or run.batch == 1 else graphs
