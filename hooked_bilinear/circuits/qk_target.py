"""The `Target.score(layer, head, query_pos, key_pos)` kind: construction, description and validation.

Kept apart from `target.py` (whose kinds are linear readouts of the residual stream): a score is a
bilinear form of the residual stream entering `layer`, expanded by `circuits/qk.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from hooked_bilinear.errors import InputError

if TYPE_CHECKING:
    from hooked_bilinear.circuits.target import Target


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def make_score_target(cls, layer, head, query_pos, key_pos) -> "Target":
    """Build the Target after type checks (ranges need the model: see `resolve_score`)."""
    for name, value in (("layer", layer), ("head", head), ("query_pos", query_pos)):
        if not _is_int(value):
            raise InputError(f"Target.score: {name} must be an int, got {value!r}")
    if key_pos is not None and not _is_int(key_pos):
        try:
            key_pos = tuple(key_pos)
        except TypeError:
            raise InputError(f"Target.score: key_pos must be None, an int or a list of ints, got {key_pos!r}") from None
        if not key_pos or not all(_is_int(k) for k in key_pos):
            raise InputError(f"Target.score: key_pos must be None, an int or a non-empty list of ints, got {key_pos!r}")
    return cls("score", query_pos, a=(layer, head), b=key_pos)


def describe_score(target: "Target") -> str:
    layer, head = target.a
    keys = "every key position up to it" if target.b is None else f"key pos {target.b}"
    return f"attention score of head {layer}.{head} at query pos {target.pos}, {keys}"


@dataclass(frozen=True)
class ScoreSpec:
    """A score target resolved against a model and a sequence length (all indices non-negative)."""

    layer: int
    head: int
    query_pos: int
    key_pos: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"head {self.layer}.{self.head}, query pos {self.query_pos}"


def resolve_score(target: "Target", cfg, n: int, at: Optional[object] = "logits") -> ScoreSpec:
    """Check layer, head and positions against the model and a sequence of `n` positions.

    Raises:
        InputError: out-of-range layer / head / position, a key position after the query (masked:
            its score is -inf), a repeated key position, or `at` set to something else than the logits.
    """
    layer, head = target.a
    if at not in (None, "logits"):
        raise InputError(f"a score target is read at layer {layer}'s attention, so at= must stay 'logits', got {at!r}")
    if not 0 <= layer < cfg.n_layers:
        raise InputError(f"Target.score: layer {layer} is out of range for a model with n_layers={cfg.n_layers}")
    if not 0 <= head < cfg.n_heads:
        raise InputError(f"Target.score: head {head} is out of range for a model with n_heads={cfg.n_heads}")
    qp = target.pos + n if target.pos < 0 else target.pos
    if not 0 <= qp < n:
        raise InputError(f"Target.score: query position {target.pos} is out of range for a sequence of {n} positions")
    if target.b is None:
        keys = tuple(range(qp + 1))
    else:
        raw = (target.b,) if _is_int(target.b) else tuple(target.b)
        keys = []
        for k in raw:
            kk = k + n if k < 0 else k
            if not 0 <= kk < n:
                raise InputError(f"Target.score: key position {k} is out of range for a sequence of {n} positions")
            if kk > qp:
                raise InputError(
                    f"Target.score: key position {kk} is after query position {qp}; the causal mask sets that "
                    f"score to -inf (it has no expansion): key positions must be in [0, {qp}]")
            keys.append(kk)
        if len(set(keys)) != len(keys):
            raise InputError(f"Target.score: key positions {list(raw)} repeat a position")
        keys = tuple(keys)
    return ScoreSpec(layer, head, qp, keys)
