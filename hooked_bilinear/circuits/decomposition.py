"""PathDecomposition: a list of path terms whose contributions sum exactly to a real forward-pass output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hooked_bilinear.circuits.nodes import Node
from hooked_bilinear.errors import InputError


@dataclass(frozen=True)
class CheckResult:
    """How well Σ terms reproduces the real forward pass.

    Attributes:
        max_abs_err: max over output elements of |Σ terms − reference|.
        max_rel_err: max_abs_err / max |reference| (misleading for a near-zero reference, e.g. a
            near-tied logit difference, where it divides by a tiny number).
        n_terms: number of terms.
        what: what was decomposed (and, for a float64 pass of a float32 model, that it is the reference).
        max_mass_rel_err: max over output elements of |Σ terms − reference| / Σ_terms |term|, the error
            relative to the terms' absolute mass: rounding of a sum is bounded by its mass times the unit
            roundoff, so this stays near ε_dtype even when the terms cancel to a tiny total.
    """

    max_abs_err: float
    max_rel_err: float
    n_terms: int
    what: str
    max_mass_rel_err: float = float("nan")

    def __str__(self) -> str:
        return (f"Σ of {self.n_terms} terms vs the real {self.what}: max abs err {self.max_abs_err:.2e}, "
                f"max err / terms' abs mass {self.max_mass_rel_err:.2e}, max rel err {self.max_rel_err:.2e}")

    def assert_ok(self, rtol: float, mass_rtol: Optional[float] = None) -> "CheckResult":
        """Raise AssertionError unless max_rel_err <= rtol (and max_mass_rel_err <= mass_rtol when given)."""
        if not self.max_rel_err <= rtol:
            raise AssertionError(f"{self} exceeds rtol={rtol:.1e}")
        if mass_rtol is not None and not self.max_mass_rel_err <= mass_rtol:
            raise AssertionError(f"{self} exceeds mass_rtol={mass_rtol:.1e}")
        return self


class PathDecomposition:
    """Exact path terms of one forward pass (frozen attention patterns and norm scales, spec §2.1).

    Attributes:
        nodes: the terms, as path-tree `Node`s (aggregates such as `mlp1` are exact remainders).
        values: per-term output, [n_terms, batch] with a target, else [n_terms, batch, pos, d_out].
        norms: [n_terms] residual-stream norm of each term at the target positions (batch mean).
        reference: the real output the terms must sum to (same trailing shape as `values`).
        level: 1, 2, "full" or "lazy".
        history: per-expansion records of a lazy run (label, contribution, cancellation ratio, ...).

    Example:
        >>> d = decompose(model, tokens, level=2, target=Target.logit(7))
        >>> d.check()                      # Σ terms vs the real logit
        >>> d.top(10)                      # a DataFrame of the largest terms
        >>> d.group("signature")           # terms summed by tree shape
    """

    def __init__(self, nodes: list[Node], values: Tensor, norms: Tensor, reference: Tensor, *,
                 level, positions: list[int], description: str, table=None, history: Optional[list[dict]] = None):
        self.nodes, self.values, self.norms, self.reference = nodes, values, norms, reference
        self.level, self.positions, self.description = level, positions, description
        self.table, self.history = table, history or []
        self._frame: Optional[pd.DataFrame] = None

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"PathDecomposition(level={self.level!r}, {len(self)} terms, {self.description})"

    @property
    def has_target(self) -> bool:
        return self.values.ndim == 2

    @property
    def total(self) -> Tensor:
        """Σ over terms (what `check` compares with `reference`)."""
        return self.values.sum(0)

    def check(self) -> CheckResult:
        """Errors of Σ terms against the real forward pass (see `CheckResult`).

        The reference is read off the cached forward-pass output by plain indexing
        (`circuits/reference.py`), independently of the weights that read the terms out.
        """
        diff = (self.total - self.reference).abs()
        err = diff.max().item()
        scale = self.reference.abs().max().item()
        mass = self.values.abs().sum(0)
        ratio = torch.where(mass > 0, diff / mass.clamp_min(torch.finfo(mass.dtype).tiny), diff)
        return CheckResult(err, err / scale if scale > 0 else err, len(self), self.description,
                           max_mass_rel_err=ratio.max().item())

    # ------------------------------------------------------------------ tables
    def to_frame(self) -> pd.DataFrame:
        """One row per term: label, signature, tree, kind, layers, heads, degree, positions,
        contribution (batch mean; NaN without a target), norm, remainder (an unexpanded aggregate)."""
        if self._frame is None:
            contrib = self.values.mean(1).cpu().numpy() if self.has_target else np.full(len(self), np.nan)
            rows = []
            for node, c, nm in zip(self.nodes, contrib, self.norms.tolist()):
                comps = node.components()
                rows.append(dict(
                    label=node.label, signature=node.signature, tree=node.tree, kind=_kind(node),
                    layers=tuple(sorted({l for _, l, _ in comps})),
                    heads=tuple(sorted({f"{l}.{h}" for k, l, h in comps if k == "head"})),
                    degree=node.degree, positions=tuple(self.positions), contribution=float(c), norm=nm,
                    remainder=node.expandable,
                ))
            frame = pd.DataFrame(rows)
            frame["degree"] = frame["degree"].astype("Int64")
            self._frame = frame
        return self._frame.copy()

    def _sort_key(self) -> str:
        return "contribution" if self.has_target else "norm"

    def top(self, k: int = 20) -> pd.DataFrame:
        """The k terms with the largest |contribution| (largest norm without a target)."""
        frame = self.to_frame()
        key = frame[self._sort_key()].abs()
        return frame.loc[key.sort_values(ascending=False).index[:k]]

    def group(self, by: str = "signature") -> pd.DataFrame:
        """Sum contributions of terms sharing `by`: "signature", "label", "kind", "degree", "layers" or "heads".

        Returns columns contribution (exact sum), abs_contribution (Σ|·|, shows cancellation) and n_terms.
        """
        frame = self.to_frame()
        if by not in frame.columns:
            raise KeyError(f"cannot group by {by!r}; expected one of {list(frame.columns)}")
        frame["abs_contribution"] = frame["contribution"].abs()
        out = frame.groupby(by, dropna=False, sort=False).agg(
            contribution=("contribution", "sum"), abs_contribution=("abs_contribution", "sum"),
            n_terms=("label", "size"))
        return out.reindex(out["contribution"].abs().sort_values(ascending=False).index)

    def pair_table(self, layer: int) -> pd.DataFrame:
        """The symmetric [K, K] table of MLP `layer`'s unordered input pairs (spec §2.3 item 2).

        Entry (i, j) holds 2·B_sym(T_i, T_j) read out into the target for i≠j and B_sym(T_i, T_i) on the
        diagonal (the norm instead without a target), so the upper triangle sums to the MLP's contribution.

        Raises:
            InputError: `layer` is not an int in [0, n_layers), or the model has no MLPs.
            KeyError: the decomposition does not hold every pair term of that layer (level 2 does).
        """
        if self.table is None:
            raise KeyError("this decomposition has no node table")
        n_layers = self.table.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise InputError(f"pair_table(layer) needs a layer in [0, n_layers={n_layers}), got {layer!r} "
                             "(negative indices are not accepted: name the layer)")
        if not self.table.has_mlp:
            raise InputError("pair_table: this model is attention-only, it has no MLP pair terms")
        inputs = self.table.mlp_inputs(layer)
        where = {n.id: i for i, n in enumerate(self.nodes)}
        col = self.values.mean(1) if self.has_target else self.norms
        K = len(inputs)
        out = np.zeros((K, K))
        for i, x in enumerate(inputs):
            for j in range(i, K):
                y = inputs[j]
                node = (self.table.get("sq", layer, None, (x,)) if i == j
                        else self.table.get("pair", layer, None, (x, y)))
                if node.id not in where:
                    raise KeyError(f"term {node.label} is not in this decomposition (pair tables come from level=2)")
                out[i, j] = out[j, i] = float(col[where[node.id]])
        labels = [x.label for x in inputs]
        return pd.DataFrame(out, index=labels, columns=labels)

    # ------------------------------------------------------------------ plots
    def plot_top(self, k: int = 20, **kwargs):
        """Horizontal bars of the k largest terms; returns the matplotlib Figure."""
        from hooked_bilinear.circuits.plots import plot_top

        return plot_top(self, k, **kwargs)

    def plot_pair_table(self, layer: int, **kwargs):
        """Heatmap of `pair_table(layer)`; returns the matplotlib Figure."""
        from hooked_bilinear.circuits.plots import plot_pair_table

        return plot_pair_table(self, layer, **kwargs)


def _kind(node: Node) -> str:
    if node.expandable:
        return "remainder"
    if node.kind in ("sq", "pair"):
        return "mlp"
    return node.kind if node.kind == "head" else "leaf"
