"""What a decomposition is read out into: full logits (or residual), or one scalar target per sequence.

A `Target` is a linear functional of the output at chosen positions. Once σf is frozen, it is a
linear functional of every residual-stream contribution X:

    target(X) = Σ_{p∈P} X[b,p] · G[b,p],   G[b,p] = W_U'' w[b,p] / σf[b,p]      (at the logits)
    target(X) = Σ_{p∈P} X[b,p] · w[b,p]                                        (at a residual point)

where w[b,p] is the weight on the output space (a one-hot token, a ±1 logit difference, or a direction).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from hooked_bilinear.circuits.frozen import FrozenRun
from hooked_bilinear.errors import InputError

PosSpec = Union[int, Sequence[int], None]


@dataclass(frozen=True)
class Target:
    """A scalar target per sequence: a token's logit, a logit difference, or a direction.

    Contributions at several positions are summed. Build one with the class methods.

    Example:
        >>> Target.logit(7, pos=-1)            # logit of token 7 at the last position
        >>> Target.logit_diff(7, 3)            # logit[7] - logit[3] at the last position
        >>> Target.direction(u, pos=[2, 5])    # u · output at positions 2 and 5 (u: [d_vocab] or [d_model])
        >>> Target.next_token()                # Σ_p logit of the actual next token (teacher forcing)
    """

    kind: str
    pos: PosSpec = -1
    a: object = None
    b: object = None
    u: Optional[Tensor] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.pos is not None and not isinstance(self.pos, int):
            object.__setattr__(self, "pos", tuple(_index(p) for p in self.pos))  # hashable, immutable
        elif isinstance(self.pos, bool):
            raise InputError(f"target position must be an int or a sequence of ints, got {self.pos!r}")

    @classmethod
    def logit(cls, token: Union[int, Tensor], pos: PosSpec = -1) -> "Target":
        """Logit of `token` (an int, or a [batch] / [batch, n_pos] tensor of ids) at `pos`.

        With [batch, n_pos] ids, column i is read at the i-th position of `pos`, in the order given.
        """
        return cls("logit", pos, a=token)

    @classmethod
    def logit_diff(cls, token: Union[int, Tensor], other: Union[int, Tensor], pos: PosSpec = -1) -> "Target":
        """`logit[token] - logit[other]` at `pos`."""
        return cls("logit_diff", pos, a=token, b=other)

    @classmethod
    def direction(cls, u: Tensor, pos: PosSpec = -1) -> "Target":
        """`u · output` at `pos`; u is [D] = [d_vocab] at the logits, [d_model] at a residual point.

        Also [batch, D] (one direction per sequence, used at every position) or [batch, n_pos, D]
        (row i at the i-th position of `pos`, in the order given).
        """
        return cls("direction", pos, u=u)

    @classmethod
    def next_token(cls) -> "Target":
        """Σ over positions p < n-1 of the logit of tokens[p+1] (the teacher-forced next token)."""
        return cls("next_token", None)

    # ---- attention-score target (QK expansion, circuits/qk.py; not a readout of the residual stream)
    @classmethod
    def score(cls, layer: int, head: int, query_pos: int = -1, key_pos: PosSpec = None) -> "Target":
        """Pre-softmax score `hook_attn_scores[b, head, query_pos, key_pos]` of head (layer, head).

        `decompose(model, tokens, target=Target.score(...))` splits it into (query source × key source)
        pairs (`ScoreDecomposition`). `key_pos=None` takes every key position up to the query (the
        whole pattern row); an int or a list of ints picks some.
        """
        from hooked_bilinear.circuits.qk_target import make_score_target

        return make_score_target(cls, layer, head, query_pos, key_pos)

    def describe(self) -> str:
        if self.kind == "score":
            from hooked_bilinear.circuits.qk_target import describe_score

            return describe_score(self)
        where = "all but the last position" if self.kind == "next_token" else f"pos {self.pos}"
        what = {"logit": f"logit[{_short(self.a)}]", "logit_diff": f"logit[{_short(self.a)}] - logit[{_short(self.b)}]",
                "direction": "direction u", "next_token": "next-token logit"}[self.kind]
        return f"{what} at {where}"


def _index(p) -> int:
    """An integer position (int, numpy or 0-d torch integer); floats and bools are refused, not rounded."""
    if isinstance(p, bool):
        raise InputError(f"target position {p!r} must be an int, not a bool")
    try:
        return operator.index(p)
    except TypeError:
        raise InputError(f"target position {p!r} must be an int") from None


def _short(x) -> str:
    if not isinstance(x, Tensor):
        return str(x)
    return str(x.tolist()) if x.numel() <= 4 else f"<{tuple(x.shape)} ids>"


def as_target(target) -> Optional[Target]:
    """Normalise the `target=` shorthand: int → logit, (a, b) → logit_diff, 1-D float tensor → direction."""
    if target is None or isinstance(target, Target):
        return target
    if isinstance(target, int):
        return Target.logit(target)
    if isinstance(target, tuple) and len(target) == 2 and all(isinstance(t, int) for t in target):
        return Target.logit_diff(*target)
    if isinstance(target, Tensor) and target.dtype.is_floating_point:
        return Target.direction(target)
    raise InputError(
        f"target must be None, an int token, a (token, other) pair, a float direction tensor or a Target, got {target!r}"
    )


def target_order(target: Optional[Target], n: int) -> list[int]:
    """The destination positions read by `target`, non-negative, in the order the user gave them.

    Per-position token ids `[batch, n_pos]` and directions `[batch, n_pos, D]` pair their column i with
    the i-th position of this list (`pos=[3, 1]`: column 0 is position 3).

    Raises:
        InputError: a position outside [-n, n), a repeated position, or next_token() on one position.
    """
    if target is None:
        return list(range(n))
    if target.kind == "next_token":
        if n < 2:
            raise InputError("Target.next_token() needs at least 2 positions")
        return list(range(n - 1))
    pos = [target.pos] if isinstance(target.pos, int) else list(target.pos)
    if not pos:
        raise InputError("target positions are empty; give at least one position (e.g. pos=-1)")
    out = []
    for p in pos:
        if isinstance(p, bool) or not isinstance(p, int):
            raise InputError(f"target position {p!r} must be an int")
        q = p + n if p < 0 else p
        if not 0 <= q < n:
            raise InputError(f"target position {p} is out of range for a sequence of {n} positions")
        out.append(q)
    if len(set(out)) != len(out):
        raise InputError(f"target positions {pos} repeat a position")
    return out


def target_positions(target: Optional[Target], n: int) -> list[int]:
    """The destination positions read by `target`, non-negative and sorted (all positions if None)."""
    return sorted(target_order(target, n))


def _onehot(token, batch: int, n_pos: int, D: int, like: Tensor) -> Tensor:
    """One-hot weights [batch, n_pos, D] from an int, [batch] or [batch, n_pos] ids (columns in the user's order)."""
    t = torch.as_tensor(token, device=like.device)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InputError(f"target token ids must be integers, got dtype {t.dtype}")
    t = t.long()
    if t.ndim == 0:
        t = t.expand(batch, n_pos)
    elif t.ndim == 1:
        if t.shape[0] != batch:
            raise InputError(f"target token tensor has shape {tuple(t.shape)} but the batch size is {batch}; "
                             f"expected [{batch}] or [{batch}, {n_pos}] (one column per target position)")
        t = t[:, None].expand(batch, n_pos)
    elif tuple(t.shape) != (batch, n_pos):
        raise InputError(f"target token tensor has shape {tuple(t.shape)}; expected [{batch}] or [{batch}, {n_pos}]")
    if int(t.min()) < 0 or int(t.max()) >= D:
        raise InputError(f"target token ids must be in [0, {D}), got range [{int(t.min())}, {int(t.max())}]")
    return torch.nn.functional.one_hot(t, D).to(like.dtype)


def _direction(u, batch: int, n_pos: int, D: int, like: Tensor, space: str) -> Tensor:
    """Direction weights [batch, n_pos, D] from u [D], [batch, D] or [batch | 1, n_pos, D]."""
    if not isinstance(u, Tensor) or not u.dtype.is_floating_point:
        raise InputError(f"target direction must be a real floating-point tensor, got {getattr(u, 'dtype', type(u))}")
    if u.shape[-1:] != (D,):
        raise InputError(f"target direction has size {tuple(u.shape)[-1:]} but the output space has {space}={D}")
    u = u.to(device=like.device, dtype=like.dtype)
    if u.ndim == 1:
        return u.expand(batch, n_pos, D)
    if u.ndim == 2 and u.shape[0] == batch:
        return u[:, None].expand(batch, n_pos, D)  # one direction per sequence
    if u.ndim == 3 and u.shape[1] == n_pos and u.shape[0] in (1, batch):
        return u.expand(batch, n_pos, D)
    raise InputError(f"target direction has shape {tuple(u.shape)}; expected [{D}], [batch={batch}, {D}] or "
                     f"[{batch}, n_pos={n_pos}, {D}] (one row per target position, in the order given)")


class Readout:
    """Maps residual-stream contributions at the target positions to the decomposition's output.

    Full mode (`target=None`): output [batch, n, d_vocab] logits (or [batch, n, d_model] at a residual
    point) at every position. Target mode: one scalar per sequence, `[batch]`.

    `reference` is computed by `reference.reference_output` from the cached forward-pass output by
    plain indexing, sharing no code with the weights `G` that read the terms out, so a bug in either
    shows up in `PathDecomposition.check()` instead of cancelling.
    """

    def __init__(self, run: FrozenRun, target: Optional[Target], at_layer: Optional[int],
                 positions: Optional[list[int]] = None):
        from hooked_bilinear.circuits.reference import reference_output

        self.run, self.target, self.at_layer = run, target, at_layer
        self.at_logits = at_layer is None
        self.positions = target_positions(target, run.n) if positions is None else list(positions)
        self.full = target is None
        f = run.folded
        idx = torch.tensor(self.positions, device=run.tokens.device)
        ref_out = run.logits if self.at_logits else run.resid[at_layer]
        D = ref_out.shape[-1]
        if self.full:
            self.G = None
            self.const = f.b_U.expand(run.batch, run.n, D).clone() if self.at_logits else None
        else:
            w = self._weights(target, D, ref_out)  # [batch, |P|, D], columns in self.positions order
            if self.at_logits:
                self.G = torch.einsum("dv,bpv->bpd", f.W_U, w) / run.scale_final[:, idx]
                self.const = torch.einsum("v,bpv->b", f.b_U, w)
            else:
                self.G, self.const = w, None
        self.reference = reference_output(target, ref_out, run.tokens, run.n_input or run.n)

    def _weights(self, target: Target, D: int, like: Tensor) -> Tensor:
        """Weights [batch, |P|, D] on the output space at `self.positions` (sorted)."""
        B = self.run.batch
        if target.kind == "next_token":
            if not self.at_logits:
                raise InputError("Target.next_token() needs the decomposition at the logits")
            return _onehot(self.run.tokens[:, 1:][:, self.positions], B, len(self.positions), D, like)
        order = target_order(target, self.run.n_input or self.run.n)  # the user's order
        if sorted(order) != self.positions:
            raise InputError(f"target positions {order} do not match the decomposition's positions {self.positions}")
        P = len(order)
        if target.kind in ("logit", "logit_diff"):
            if not self.at_logits:
                raise InputError("logit targets need the decomposition at the logits; use Target.direction(u) at a residual point")
            w = _onehot(target.a, B, P, D, like)
            if target.kind == "logit_diff":
                w = w - _onehot(target.b, B, P, D, like)
        elif target.kind == "direction":
            w = _direction(target.u, B, P, D, like, "d_vocab" if self.at_logits else "d_model")
        else:
            raise InputError(f"unknown target kind {target.kind!r}")
        return w[:, [order.index(p) for p in self.positions]]  # user order -> sorted positions

    def values(self, X: Tensor) -> Tensor:
        """[k, batch, |P|, d_model] at the target positions -> [k, batch] (target) or [k, batch, n, D] (full)."""
        if not self.full:
            return torch.einsum("kbpd,bpd->kb", X, self.G)
        if not self.at_logits:
            return X
        return (X @ self.run.folded.W_U) / self.run.scale_final

    def describe(self) -> str:
        where = "logits" if self.at_logits else f"resid_pre of layer {self.at_layer}"
        out = f"{where}, " + ("full output" if self.full else self.target.describe())
        if self.run.pass_dtype is not None and self.run.model_dtype is not None \
                and self.run.pass_dtype != self.run.model_dtype:
            out += f" (reference: a {_name(self.run.pass_dtype)} pass of the {_name(self.run.model_dtype)} model)"
        return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
