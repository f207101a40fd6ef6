"""Job kind "graphs": an exact attribution graph per prompt of a prompt file.

    python -m hooked_bilinear.jobs graphs MODEL --prompts prompts.txt --max-nodes 256 --out DIR
    torchrun --nproc-per-node 8 -m hooked_bilinear.jobs graphs MODEL --prompts prompts.jsonl --out DIR

A unit is one prompt: ``hooked_bilinear.graphs.attribute(model, prompt)``, written with the graph's
own ``save`` (one safetensors file, read back by ``AttributionGraph.load``). The prompt file holds
one prompt per line: plain text (``.txt``, needs the model's tokenizer) or JSON lines
(``.jsonl``) with ``{"prompt": "..."}`` or ``{"tokens": [ids]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.base import Job, load_model

if TYPE_CHECKING:
    import pandas as pd

    from hooked_bilinear.jobs.store import Store


def read_prompts(path: str) -> list[str | list[int]]:
    """The prompts of a .txt (one per line) or .jsonl ({"prompt"} or {"tokens"}) file."""
    p = Path(path)
    if not p.is_file():
        raise JobError(f"--prompts {path!r} is not a file (one prompt per line: .txt, or .jsonl)")
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if p.suffix != ".jsonl":
        return lines
    out: list[str | list[int]] = []
    for i, ln in enumerate(lines):
        try:
            obj = json.loads(ln)
        except ValueError as e:
            raise JobError(f"--prompts {path!r} line {i + 1} is not JSON ({e})") from e
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
            out.append(obj["prompt"])
        elif isinstance(obj, dict) and isinstance(obj.get("tokens"), list) and all(isinstance(t, int) for t in obj["tokens"]):
            out.append(obj["tokens"])
        else:
            raise JobError(f"--prompts {path!r} line {i + 1} must be {{\"prompt\": str}} or {{\"tokens\": [int]}}")
    return out


class GraphsJob(Job):
    """Attribution graphs over a prompt file (see the module docstring)."""

    kind = "graphs"

    def __init__(self, model: str, prompts: str, max_nodes: int = 256, edges_per_node: int = 64,
                 dtype: str | None = None):
        self.model_name, self.prompts_path = model, prompts
        self.max_nodes, self.edges_per_node, self.dtype = max_nodes, edges_per_node, dtype

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="bundled name, local folder, or Hub id")
        parser.add_argument("--prompts", required=True, help=".txt (one prompt a line) or .jsonl file")
        parser.add_argument("--max-nodes", type=int, default=256)
        parser.add_argument("--edges-per-node", type=int, default=64)
        parser.add_argument("--dtype", default=None, choices=["float32", "float64"], help="compute dtype")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "GraphsJob":
        return cls(args.model, args.prompts, args.max_nodes, args.edges_per_node, args.dtype)

    def setup(self, device: torch.device) -> None:
        self.prompts = read_prompts(self.prompts_path)
        if not self.prompts:
            raise JobError(f"--prompts {self.prompts_path!r} holds no prompts")
        self.model = load_model(self.model_name, device)
        if any(isinstance(p, str) for p in self.prompts) and getattr(self.model, "tokenizer", None) is None:
            raise JobError(f"model {self.model_name!r} has no tokenizer: give token ids ({{\"tokens\": [...]}} lines)")
        self._dtype = getattr(torch, self.dtype) if self.dtype else None

    def params(self) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(self.prompts).encode()).hexdigest()[:16]
        return {"model": self.model_name, "prompts": self.prompts_path, "prompts_digest": digest,
                "n_prompts": len(self.prompts), "max_nodes": self.max_nodes, "edges_per_node": self.edges_per_node,
                "dtype": self.dtype}

    def units(self) -> list[str]:
        return [f"P{i:07d}" for i in range(len(self.prompts))]

    def run_unit(self, unit: str):
        from hooked_bilinear.graphs import attribute

        prompt = self.prompts[int(unit[1:])]
        if not isinstance(prompt, str):
            prompt = torch.tensor(prompt, device=self.model.cfg.device)
        graph = attribute(self.model, prompt, max_nodes=self.max_nodes, edges_per_node=self.edges_per_node,
                          dtype=self._dtype)
        check = graph.check()
        meta = {"prompt": int(unit[1:]), "n_nodes": len(graph.nodes), "n_edges": len(graph.edges),
                "max_abs_err": check.max_abs_err, "max_rel_err": check.max_rel_err}
        return graph.save, meta

    @classmethod
    def table(cls, manifest: dict, records: dict[str, dict], store: "Store", graphs: bool = False,
              **options: Any) -> "pd.DataFrame":
        """One row per prompt: sizes, check errors, the graph file (``graphs=True`` loads each graph)."""
        import pandas as pd

        rows = []
        for unit in sorted(records):
            row = dict(records[unit]["meta"], path=str(store.shard_path(unit)))
            if graphs:
                from hooked_bilinear.graphs import AttributionGraph

                row["graph"] = AttributionGraph.load(row["path"])
            rows.append(row)
        return pd.DataFrame(rows)
