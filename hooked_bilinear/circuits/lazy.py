"""Best-first lazy expansion: exact after every step, because unexpanded nodes stay as remainder terms.

    frontier = level-1 components                        (Σ frontier = target, exactly)
    repeat: x* = argmax |contribution| over expandable frontier nodes
            frontier ← frontier − {x*} ∪ children(x*)    (children sum to x*, so Σ is unchanged)

Each expansion records the cancellation ratio Σ|children| / |parent|: a ratio far above 1 means the
children cancel, and pruning them by magnitude would be unreliable (spec §2.3 item 6).
"""

from __future__ import annotations

import heapq
import time
from typing import Optional

import torch
from torch import Tensor

from hooked_bilinear.circuits.decomposition import PathDecomposition
from hooked_bilinear.circuits.engine import PathEngine
from hooked_bilinear.circuits.levels import constant_terms
from hooked_bilinear.circuits.nodes import Node


class LazyExpansion:
    """A frontier of path terms under a target, expanded best-first one node at a time.

    Example:
        >>> lazy = LazyExpansion(engine, start)   # usually via decompose(..., level="lazy")
        >>> lazy.run(budget=100)
        >>> d = lazy.decomposition()             # exact: d.check() holds after every step
    """

    def __init__(self, engine: PathEngine, start: list[Node], level="lazy", description: str = ""):
        if engine.readout.full:
            raise ValueError("lazy expansion needs a target to score nodes (pass target=...)")
        self.engine, self.level, self.description = engine, level, description
        self.frontier: dict[int, list] = {}  # node id -> [node, multiplicity, contribution [batch]]
        self._heap: list[tuple[float, int]] = []
        self.history: list[dict] = []
        self.skipped: list[Node] = []  # too large to expand under the caps; kept as exact remainders
        V = torch.stack([engine.value(x, "tgt") for x in start])
        self._add(start, V)

    def _add(self, nodes: list[Node], V: Tensor, mult: int = 1) -> Tensor:
        contrib = self.engine.readout.values(V)  # [k, batch]
        scores = contrib.abs().sum(1).tolist()
        for node, c, score in zip(nodes, contrib, scores):
            entry = self.frontier.get(node.id)
            if entry is None:
                self.frontier[node.id] = [node, mult, c]
                if node.expandable:
                    heapq.heappush(self._heap, (-score, node.id))
            else:  # the same tree reached twice: keep one term with a multiplicity (never happens in the grammar)
                entry[1] += mult
        return contrib

    def _norms(self, nodes: list[Node]) -> Tensor:
        V = torch.stack([self.engine.value(x, "tgt") for x in nodes])
        return V.pow(2).sum((2, 3)).sqrt().mean(1)

    @property
    def n_expanded(self) -> int:
        return len(self.history)

    def best(self) -> Optional[Node]:
        """The expandable frontier node with the largest |contribution| (None if all are leaf trees)."""
        while self._heap:
            _, nid = self._heap[0]
            if nid in self.frontier:
                return self.frontier[nid][0]
            heapq.heappop(self._heap)
        return None

    def step(self) -> Optional[dict]:
        """Expand the best node; return its history record (None when nothing is left to expand)."""
        node = self.best()
        if node is None:
            return None
        heapq.heappop(self._heap)
        t0 = time.perf_counter()
        _, mult, parent = self.frontier.pop(node.id)
        kids, V = self.engine.children_values(node, "tgt")
        contrib = self._add(kids, V, mult)
        p = float(parent.abs().sum())
        s = float(contrib.abs().sum())
        rec = dict(step=len(self.history), label=node.label, contribution=float(parent.mean()) * mult,
                   n_children=len(kids), sum_abs_children=s * mult, cancellation=s / p if p > 0 else float("inf"),
                   frontier=len(self.frontier), seconds=time.perf_counter() - t0)
        self.history.append(rec)
        return rec

    def run(self, budget: int = 100, max_terms: Optional[int] = None, tol: float = 0.0,
            max_children: Optional[int] = 50_000, progress: bool = False) -> "LazyExpansion":
        """Expand up to `budget` nodes, best first.

        A node whose expansion would create more than `max_children` terms, or grow the frontier past
        `max_terms`, is skipped (it stays an exact remainder, listed in `skipped`): squaring an MLP
        aggregate of k terms creates k(k+1)/2 children. Stops early once every unexpanded remainder has
        |contribution| <= tol·|total|. `progress` shows a bar over the budget with the frontier size.
        """
        from hooked_bilinear.progress import tqdm

        bar = tqdm(total=budget, desc="lazy expansion", disable=not progress)
        for _ in range(budget):
            node = self.best()
            while node is not None and self._too_big(node, max_terms, max_children):
                heapq.heappop(self._heap)
                self.skipped.append(node)
                node = self.best()
            if node is None:
                break
            if tol > 0:
                total = float(sum(m * c for _, m, c in self.frontier.values()).abs().sum())
                if float(self.frontier[node.id][2].abs().sum()) <= tol * total:
                    break
            self.step()
            bar.update()
            bar.set_postfix(terms=len(self.frontier), refresh=False)
        bar.close()
        return self

    def _too_big(self, node: Node, max_terms: Optional[int], max_children: Optional[int]) -> bool:
        n = self.engine.table.n_children(node)
        return (max_children is not None and n > max_children) or \
            (max_terms is not None and len(self.frontier) - 1 + n > max_terms)

    def decomposition(self) -> PathDecomposition:
        """The current frontier (plus the b_U' term at the logits) as an exact PathDecomposition."""
        entries = list(self.frontier.values())
        nodes = [n for n, _, _ in entries]
        values = torch.stack([m * c for _, m, c in entries])
        norms = self._norms(nodes) * torch.tensor([float(m) for _, m, _ in entries], dtype=values.dtype)
        c_nodes, c_vals, c_norms = constant_terms(self.engine)
        nodes, values, norms = nodes + c_nodes, torch.cat([values, c_vals]), torch.cat([norms, c_norms])
        ro = self.engine.readout
        return PathDecomposition(nodes, values, norms, ro.reference, level=self.level, positions=ro.positions,
                                 description=self.description or ro.describe(), table=self.engine.table,
                                 history=list(self.history))
