"""QK expansion: why a head attends where it does (spec graphs.md §2).

With the norm scales σ1 of one forward pass frozen (and the softmax patterns of the layers below),
the query and key inputs of head (l, h) are sums of source contributions c_s to the residual stream
entering block l (token, position, earlier heads, b_O, earlier MLPs or their neurons, b_out). Folding
ln1's centering C and weight w into the projections,

    W_Q'' = C diag(w) W_Q[h]      b_Q'' = b_Q[h] + b_ln W_Q[h]       (the same for K)
    q_a[p] = R_p (c_a[p] / σ1[p]) W_Q''          k_b[q] = R_q (c_b[q] / σ1[q]) W_K''

(R_p the RoPE rotation at position p, the identity without rotary), and the pre-softmax score

    s[p, q] = Σ_{a ∈ S ∪ {bQ}} Σ_{b ∈ S ∪ {bK}} q_a[p] · k_b[q] / attn_scale

exactly. `decompose(model, tokens, target=Target.score(l, h, p, q))` returns these terms as a
`ScoreDecomposition`; its `check()` compares their sum with the real cached
`blocks.{l}.attn.hook_attn_scores[b, h, p, q]` of a separate forward pass.

Source sets: level 1 = the level-1 components of the residual stream (TL `decompose_resid` with heads
split); level 2 = every MLP source replaced by its unordered input pairs (as in `decompose(level=2)`);
"neurons" = every MLP source replaced by its d_mlp neurons (neuron k of MLP l writes h_k W_out[k]).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import FrozenRun, check_bilinear, freeze, to_tokens
from hooked_bilinear.circuits.qk_result import ScoreDecomposition
from hooked_bilinear.circuits.qk_target import ScoreSpec, resolve_score
from hooked_bilinear.errors import InputError
from hooked_bilinear.model.validation import check_tokens

SCORE_LEVELS = (1, 2, "neurons")


def check_softmax(model) -> None:
    """Refuse models without a pre-softmax score (bilinear attention has a pattern, not a score)."""
    if getattr(model.cfg, "attention", "softmax") != "softmax":
        raise InputError(
            f"Target.score expands the pre-softmax score of softmax attention, but this model has "
            f"attention={model.cfg.attention!r}, whose pattern is itself a polynomial: decompose its logits "
            "instead (nothing is frozen there)")


def folded_qk(model, spec: ScoreSpec, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(W_Q'', b_Q'', W_K'', b_K'') of head (layer, head): ln1 weight, bias and centering folded in."""
    from hooked_bilinear.circuits.frozen import _centers, _fold_rows, _norm_params

    block = model.blocks[spec.layer]
    attn, d = block.attn, model.cfg.d_model
    w, b = _norm_params(block.ln1, d, dtype, model.W_E.device)
    center = _centers(block.ln1)
    out = []
    for W, bias in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K)):
        W = W[spec.head].detach().to(dtype)
        out += [_fold_rows(W, w, center), bias[spec.head].detach().to(dtype) + b @ W]
    return tuple(out)


def rotate(model, x: Tensor, positions: Tensor) -> Tensor:
    """RoPE at `positions` on the last axis of x [..., len(positions), d_head] (identity without rotary).

    The cos/sin tables are rebuilt in x's dtype, so a float64 expansion of a float32 model rotates in float64.
    """
    cfg = model.cfg
    if cfg.positional_embedding_type != "rotary":
        return x
    from hooked_bilinear.components.attention import rotary_tables, rotate_half

    r = cfg.rotary_dim
    cos, sin = rotary_tables(int(positions.max()) + 1, r, float(cfg.rotary_base), x.dtype)
    cos, sin = cos.to(x.device)[positions], sin.to(x.device)[positions]
    rot = x[..., :r] * cos + rotate_half(x[..., :r]) * sin
    return torch.cat([rot, x[..., r:]], dim=-1) if r < x.shape[-1] else rot


def source_values(engine, layer: int, level) -> tuple[list[str], list[Tensor], Optional[tuple]]:
    """Labels and values [S, b, n, d] of the sources of resid_pre(layer); for "neurons" also the hidden
    activations needed to project neurons without materialising their d_model writes."""
    T = engine.table
    labels, groups, neurons = [], [], []
    for x in T.parts_pre(layer):
        if x.kind == "mlp_c" and level == 2:
            kids, V = engine.children_values(x, "all")
            labels += [k.label for k in kids]
            groups.append(V)
        elif x.kind == "mlp_c" and level == "neurons":
            neurons.append(x.layer)
        else:
            labels.append(x.label)
            groups.append(engine.value(x, "all")[None])
    return labels, groups, neurons


def neuron_hidden(engine, l: int) -> Tensor:
    """h = (x̃ W_l'' + b_l')(x̃ W_r'' + b_r') of MLP l at every position, [b, n, d_mlp] (frozen σ2)."""
    L = engine.run.folded.layers[l]
    resid_mid = sum(engine.value(x, "all") for x in engine.table.mlp_inputs(l) if x.kind != "one")
    left, right = engine.project(l, resid_mid[None], "all")
    return ((left + L.b_l) * (right + L.b_r))[0]


def expand_score(model, run: FrozenRun, spec: ScoreSpec, level) -> tuple[list[str], list[str], Tensor]:
    """Query labels, key labels and the pair terms [Sq, Sk, batch, n_keys] of one score target."""
    from hooked_bilinear.circuits.engine import PathEngine
    from hooked_bilinear.circuits.target import Readout

    dtype = run.folded.W_E.dtype
    engine = PathEngine(run, Readout(run, None, spec.layer, list(range(run.n))))
    labels, groups, neurons = source_values(engine, spec.layer, level)
    W_Q, b_Q, W_K, b_K = folded_qk(model, spec, dtype)
    sigma = run.scale1[spec.layer]  # [b, n, 1]
    p, keys = spec.query_pos, torch.tensor(spec.key_pos, device=sigma.device)
    V = torch.cat(groups)  # [S, b, n, d]
    Q = (V[:, :, p] / sigma[:, p]) @ W_Q  # [S, b, e]
    K = (V.index_select(2, keys) / sigma[:, keys]) @ W_K  # [S, b, k, e]
    for l in neurons:  # neuron k writes h_k W_out[k]: project W_out once, never form [d_mlp, b, n, d]
        h, W_out = neuron_hidden(engine, l), run.folded.layers[l].W_out
        Q = torch.cat([Q, (h[:, p, :, None] / sigma[:, p, :, None]) .mul(W_out @ W_Q).permute(1, 0, 2)])
        K = torch.cat([K, (h[:, keys, :, None] / sigma[:, keys, :, None]).mul(W_out @ W_K).permute(2, 0, 1, 3)])
        labels += [f"mlp{l}.n{k}" for k in range(W_out.shape[0])]
    B = run.batch
    Q = torch.cat([Q, b_Q.expand(1, B, -1)])
    K = torch.cat([K, b_K.expand(1, B, len(spec.key_pos), -1)])
    Q = rotate(model, Q[:, :, None], torch.tensor([p], device=keys.device))[:, :, 0]
    K = rotate(model, K, keys)
    terms = torch.einsum("sbe,tbke->stbk", Q, K) / model.cfg.attn_scale
    return labels + ["bQ"], labels + ["bK"], terms


@torch.no_grad()
def real_scores(model, tokens: Tensor, spec: ScoreSpec) -> tuple[Tensor, Tensor]:
    """The cached score and pattern entries [batch, n_keys] of an independent forward pass."""
    names = [f"blocks.{spec.layer}.attn.hook_attn_scores", f"blocks.{spec.layer}.attn.hook_pattern"]
    was_training = model.training
    model.eval()
    try:
        _, cache = model.run_with_cache(tokens, names_filter=names)
    finally:
        model.train(was_training)
    keys = list(spec.key_pos)
    return tuple(cache[name][:, spec.head, spec.query_pos][:, keys] for name in names)


@torch.no_grad()
def decompose_score(model, tokens, target, level: Union[int, str] = 1, at="logits",
                    dtype: Optional[torch.dtype] = None) -> ScoreDecomposition:
    """Exact (query source × key source) expansion of a pre-softmax attention score; see the module doc.

    Args:
        model: a HookedBilinearTransformer with softmax attention (bilinear or attention-only MLPs).
        tokens: [pos] or [batch, pos] token ids, or a string when the model has a tokenizer.
        target: `Target.score(layer, head, query_pos, key_pos)`.
        level: 1, 2 or "neurons" (see the module docstring).
        dtype: compute dtype (e.g. torch.float64 for a float32 model).

    Returns:
        A ScoreDecomposition: `check()`, `to_frame()`, `pair_table()`, `row()`, `top()`, plots.

    Raises:
        InputError: bad level, layer, head or positions (a key after the query is masked), a
            bilinear-attention model (no score), or `at` other than "logits".
        NotBilinearError: the model's MLPs are gated.
    """
    if level not in SCORE_LEVELS:
        raise InputError(f"a score target takes level in {SCORE_LEVELS}, got {level!r}")
    check_bilinear(model)
    check_softmax(model)
    tokens = check_tokens(to_tokens(model, tokens), model.cfg)
    spec = resolve_score(target, model.cfg, tokens.shape[1], at)
    tokens = tokens[:, :spec.query_pos + 1]  # causal: later positions never reach this score
    run = freeze(model, tokens, dtype=dtype)
    q_labels, k_labels, terms = expand_score(model, run, spec, level)
    score, pattern = real_scores(model, tokens, spec)
    return ScoreDecomposition(q_labels, k_labels, terms, score.to(terms.dtype), pattern.to(terms.dtype),
                              spec=spec, level=level)
