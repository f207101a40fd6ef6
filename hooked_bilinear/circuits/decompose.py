"""`decompose`: the input-based circuit extractor's entry point (spec §2)."""

from __future__ import annotations

from typing import Optional, Union

import torch

from hooked_bilinear.circuits.decomposition import PathDecomposition
from hooked_bilinear.circuits.engine import PathEngine
from hooked_bilinear.circuits.frozen import check_bilinear, freeze, to_tokens
from hooked_bilinear.circuits.lazy import LazyExpansion
from hooked_bilinear.circuits.levels import full_enumeration, level1, level2
from hooked_bilinear.circuits.target import Readout, Target, as_target, target_positions
from hooked_bilinear.errors import InputError
from hooked_bilinear.model.validation import check_tokens

LEVELS = (1, 2, "full", "lazy")


def parse_at(at: Union[str, int, None], n_layers: int) -> Optional[int]:
    """"logits" → None; an int l or "blocks.{l}.hook_resid_pre" → l (n_layers = the final residual stream)."""
    if at is None or at == "logits":
        return None
    if isinstance(at, str):
        final = f"blocks.{n_layers - 1}.hook_resid_post"
        if at == final:
            return n_layers
        if at.startswith("blocks.") and at.endswith(".hook_resid_pre") and at.split(".")[1].isdigit():
            at = int(at.split(".")[1])
        else:
            raise InputError(f"at must be 'logits', a layer index or 'blocks.{{l}}.hook_resid_pre' / {final!r}, got {at!r}")
    if not isinstance(at, int) or not 0 <= at <= n_layers:
        raise InputError(f"at={at!r} must be a layer in [0, n_layers={n_layers}] (n_layers = the final residual stream)")
    return at


def make_engine(model, tokens, target=None, at="logits", dtype: Optional[torch.dtype] = None,
                default_top: bool = False) -> tuple[PathEngine, list]:
    """Freeze a forward pass and build the engine and the level-1 frontier (shared by every level)."""
    check_bilinear(model)
    tokens = check_tokens(to_tokens(model, tokens), model.cfg)
    at_layer = parse_at(at, model.cfg.n_layers)
    target = as_target(target)
    n = tokens.shape[1]
    positions = target_positions(target, n) if target is not None else list(range(n))
    trim = target is not None and target.kind != "next_token"
    run = freeze(model, tokens, n_keep=max(positions) + 1 if trim else None, dtype=dtype)
    if target is None and default_top:
        if at_layer is not None:
            raise InputError("lazy expansion at a residual point needs target=Target.direction(u, pos)")
        target = Target.logit(run.logits[:, -1].argmax(-1))
        positions = [n - 1]
    engine = PathEngine(run, Readout(run, target, at_layer, positions))
    return engine, engine.table.parts_pre(model.cfg.n_layers if at_layer is None else at_layer)


def decompose(
    model,
    tokens,
    *,
    level: Union[int, str] = 1,
    target=None,
    at: Union[str, int] = "logits",
    budget: int = 100,
    max_terms: int = 100_000,
    tol: float = 0.0,
    dtype: Optional[torch.dtype] = None,
    max_elements: int = 50_000_000,
    progress: bool = False,
) -> PathDecomposition:
    """Exact expansion of a model's output into direct, attention and bilinear-MLP path terms.

    Attention patterns and norm scales are frozen at their values in this forward pass (spec §2.1), so
    the output is a polynomial in the embeddings and every term below is exact: Σ terms equals the
    real logits (or residual stream) up to float rounding; `result.check()` measures it.

    Args:
        model: a HookedBilinearTransformer (bilinear MLPs or attention-only; never modified).
        tokens: [pos] or [batch, pos] token ids, or a string when the model has a tokenizer.
        level: 1 (tok, pos, heads, MLPs, biases: TransformerLens DLA), 2 (each MLP as its k(k+1)/2
            unordered input pairs), "full" (every path tree; refused above `max_terms`) or "lazy"
            (best-first expansion of `budget` nodes, unexpanded nodes kept as exact remainders).
        target: None (terms hold the full output at every position), or what to attribute: an int
            token (its logit at the last position), a (token, other) logit difference, a float direction
            tensor, or a `Target`. "lazy" defaults to the top predicted token at the last position.
            `Target.score(layer, head, query_pos, key_pos)` expands an attention score into query × key
            source pairs instead and returns a `ScoreDecomposition` (levels 1, 2, "neurons"; circuits/qk.py).
        at: "logits", or a layer l / "blocks.{l}.hook_resid_pre" to decompose the residual stream
            entering block l (l = n_layers is the final residual stream).
        budget: nodes expanded by "lazy"; `tol` stops it once every remainder is below tol·|total|.
        max_terms: guard for "full" (the count is computed first) and the frontier cap for "lazy".
        dtype: compute dtype (e.g. torch.float64 for a float32 model; patterns and scales are upcast).
        max_elements: guard on terms × output size when `target` is None.
        progress: show a progress bar for "lazy".

    Returns:
        A PathDecomposition (`.check()`, `.to_frame()`, `.top(k)`, `.group()`, `.pair_table(l)`, plots).

    Raises:
        NotBilinearError: the model's MLPs are gated (SwiGLU etc.).
        TooManyPathsError: "full" would exceed `max_terms`.
        TooLargeError: full-output terms would exceed `max_elements` (pass a target).

    Example:
        >>> from hooked_bilinear.circuits import Target, decompose
        >>> d = decompose(model, tokens, level=2, target=Target.logit(42))
        >>> d.check().max_rel_err < 1e-5
        True
        >>> d.top(5)[["label", "contribution"]]
    """
    if isinstance(target, Target) and target.kind == "score":  # a bilinear form, not a readout: circuits/qk.py
        from hooked_bilinear.circuits.qk import decompose_score

        return decompose_score(model, tokens, target, level=level, at=at, dtype=dtype)
    if getattr(model.cfg, "attention", "softmax") == "bilinear":  # nothing to freeze: circuits/unfrozen.py
        from hooked_bilinear.circuits.unfrozen import decompose_unfrozen

        return decompose_unfrozen(model, tokens, level=level, target=target, at=at, budget=budget,
                                  max_terms=max_terms, tol=tol, dtype=dtype, progress=progress)
    if level not in LEVELS:
        raise InputError(f"level must be one of {LEVELS}, got {level!r}")
    engine, start = make_engine(model, tokens, target, at, dtype, default_top=level == "lazy")
    upto = model.cfg.n_layers if engine.readout.at_logits else engine.readout.at_layer
    if level == 1:
        return level1(engine, start)
    if level == 2:
        return level2(engine, start, max_elements)
    if level == "full":
        return full_enumeration(engine, start, upto, max_terms, max_elements)
    lazy = LazyExpansion(engine, start).run(budget, max_terms=max_terms, tol=tol, progress=progress)
    return lazy.decomposition()


def expand_lazy(model, tokens, target=None, at: Union[str, int] = "logits",
                dtype: Optional[torch.dtype] = None) -> LazyExpansion:
    """A LazyExpansion to step by hand: `.step()`, `.run(budget)`, `.decomposition()`, `.history`.

    Example:
        >>> lazy = expand_lazy(model, tokens, target=Target.logit(42))
        >>> for _ in range(10):
        ...     lazy.step()
        ...     assert lazy.decomposition().check().max_rel_err < 1e-5   # exact after every step
    """
    if getattr(model.cfg, "attention", "softmax") == "bilinear":  # nothing frozen: circuits/unfrozen.py
        from hooked_bilinear.circuits.unfrozen import describe, unfrozen_setup

        engine, start = unfrozen_setup(model, tokens, "lazy", target, at, dtype)
        return LazyExpansion(engine, start, description=describe(engine, model))
    engine, start = make_engine(model, tokens, target, at, dtype, default_top=True)
    return LazyExpansion(engine, start)
