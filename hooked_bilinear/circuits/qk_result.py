"""ScoreDecomposition: the (query source × key source) terms of attention scores, summing to the real ones."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.decomposition import CheckResult
from hooked_bilinear.circuits.qk_target import ScoreSpec


class ScoreDecomposition:
    """Exact pair terms of the pre-softmax scores of one head from one query position (spec graphs.md §2).

    Norm scales and the softmax patterns of earlier layers are frozen at this forward pass; the
    pattern of the head itself is the softmax of the scores, so the terms explain the score, not the
    probability: `row()` shows both.

    Attributes:
        query_sources, key_sources: labels (the last ones are the biases "bQ" / "bK", LN bias folded in).
        terms: [n_query_sources, n_key_sources, batch, n_keys]; Σ over both source axes = the score.
        reference: the real `hook_attn_scores[b, head, query_pos, key_pos]`, [batch, n_keys].
        pattern: the real `hook_pattern` entries, [batch, n_keys].
        spec: layer, head, query_pos and key_pos (non-negative).

    Example:
        >>> d = model.decompose(tokens, target=Target.score(1, 2, query_pos=-1))
        >>> d.check()               # Σ terms vs the cached hook_attn_scores
        >>> d.row()                 # per key position: score, pattern, the largest pair
        >>> d.pair_table(key_pos=3)  # query sources × key sources
    """

    def __init__(self, query_sources: list[str], key_sources: list[str], terms: Tensor, reference: Tensor,
                 pattern: Tensor, *, spec: ScoreSpec, level):
        self.query_sources, self.key_sources = list(query_sources), list(key_sources)
        self.terms, self.reference, self.pattern = terms, reference, pattern
        self.spec, self.level = spec, level

    @property
    def key_pos(self) -> tuple[int, ...]:
        return self.spec.key_pos

    @property
    def description(self) -> str:
        s = self.spec
        return (f"attention score of head {s.layer}.{s.head} at query pos {s.query_pos} "
                f"(norm scales and earlier softmax patterns frozen)")

    def __len__(self) -> int:
        return self.terms.shape[0] * self.terms.shape[1] * self.terms.shape[3]

    def __repr__(self) -> str:
        return (f"ScoreDecomposition(level={self.level!r}, {len(self.query_sources)}×{len(self.key_sources)} "
                f"source pairs × {len(self.key_pos)} keys, {self.description})")

    @property
    def total(self) -> Tensor:
        """Σ over pairs, [batch, n_keys] (what `check` compares with `reference`)."""
        return self.terms.sum((0, 1))

    def check(self) -> CheckResult:
        """Max absolute and relative error of Σ pairs against the real cached scores."""
        diff = (self.total - self.reference).abs()
        err, scale = diff.max().item(), self.reference.abs().max().item()
        mass = self.terms.abs().sum((0, 1))
        ratio = torch.where(mass > 0, diff / mass.clamp_min(torch.finfo(mass.dtype).tiny), diff)
        return CheckResult(err, err / scale if scale > 0 else err, len(self), self.description,
                           max_mass_rel_err=ratio.max().item())

    # ------------------------------------------------------------------ tables
    def _key_index(self, key_pos: Optional[int]) -> int:
        if key_pos is None:
            if len(self.key_pos) != 1:
                raise KeyError(f"this decomposition holds key positions {list(self.key_pos)}: pass key_pos=one of them")
            return 0
        q = key_pos + self.spec.query_pos + 1 if key_pos < 0 else key_pos
        if q not in self.key_pos:
            raise KeyError(f"key_pos={key_pos} is not in this decomposition (key positions {list(self.key_pos)})")
        return self.key_pos.index(q)

    def pair_table(self, key_pos: Optional[int] = None):
        """DataFrame [query source × key source] of batch-mean contributions at one key position."""
        import pandas as pd

        k = self._key_index(key_pos)
        data = self.terms[:, :, :, k].mean(2).cpu().numpy()
        return pd.DataFrame(data, index=self.query_sources, columns=self.key_sources)

    def to_frame(self):
        """One row per (query source, key source, key position): label, contribution (batch mean)."""
        import numpy as np
        import pandas as pd

        Sq, Sk, _, nk = self.terms.shape
        mean = self.terms.mean(2).cpu().numpy()  # [Sq, Sk, nk]
        qi, ki, pi = np.meshgrid(np.arange(Sq), np.arange(Sk), np.arange(nk), indexing="ij")
        qs, ks = np.array(self.query_sources, dtype=object), np.array(self.key_sources, dtype=object)
        frame = pd.DataFrame({
            "query_source": qs[qi.ravel()], "key_source": ks[ki.ravel()],
            "key_pos": np.array(self.key_pos)[pi.ravel()], "contribution": mean.ravel(),
        })
        frame.insert(0, "label", "q:" + frame["query_source"] + " × k:" + frame["key_source"])
        return frame

    def top(self, k: int = 20, key_pos: Optional[int] = None):
        """The k pairs with the largest |contribution| (at one key position, or over all)."""
        frame = self.to_frame()
        if key_pos is not None:
            frame = frame[frame["key_pos"] == self.key_pos[self._key_index(key_pos)]]
        return frame.loc[frame["contribution"].abs().sort_values(ascending=False).index[:k]]

    def group(self, by: str = "query_source"):
        """Contributions summed over the other side: rows = sources of `by` ("query_source" or
        "key_source"), columns = key positions (exact sums)."""
        import pandas as pd

        if by not in ("query_source", "key_source"):
            raise KeyError(f"cannot group by {by!r}; expected 'query_source' or 'key_source'")
        axis, labels = (1, self.query_sources) if by == "query_source" else (0, self.key_sources)
        data = self.terms.sum(axis).mean(1).cpu().numpy()  # [S, nk]
        return pd.DataFrame(data, index=labels, columns=list(self.key_pos))

    def row(self):
        """The "why this row of the pattern" view: per key position the real score, the pattern, Σ terms
        and the largest (query source × key source) pair."""
        import pandas as pd

        mean = self.terms.mean(2)  # [Sq, Sk, nk]
        Sk = mean.shape[1]
        flat = mean.reshape(-1, mean.shape[-1])
        best = flat.abs().argmax(0)
        rows = []
        for j, q in enumerate(self.key_pos):
            i = int(best[j])
            rows.append(dict(key_pos=q, score=float(self.reference[:, j].mean()), pattern=float(self.pattern[:, j].mean()),
                             sum_of_terms=float(self.total[:, j].mean()),
                             top_pair=f"q:{self.query_sources[i // Sk]} × k:{self.key_sources[i % Sk]}",
                             top_pair_contribution=float(flat[i, j])))
        return pd.DataFrame(rows).set_index("key_pos")

    # ------------------------------------------------------------------ plots
    def plot_pair_table(self, key_pos: Optional[int] = None, **kwargs):
        """Heatmap of `pair_table(key_pos)`; returns the matplotlib Figure."""
        from hooked_bilinear.circuits.qk_plots import plot_score_pairs

        return plot_score_pairs(self, key_pos, **kwargs)

    def plot_row(self, k: int = 12, **kwargs):
        """The pattern row over key positions above a heatmap of the k largest pairs per key; a Figure."""
        from hooked_bilinear.circuits.qk_plots import plot_score_row

        return plot_score_row(self, k, **kwargs)

