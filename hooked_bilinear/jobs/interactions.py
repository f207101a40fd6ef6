"""Job kind "interactions": weight-only feature interactions for every output direction of a set.

    python -m hooked_bilinear.jobs interactions MODEL --inputs decoder.safetensors --outputs unembed \\
        --layers all --top-k 32 --out DIR

For each output direction u (a row of ``--outputs``: ``unembed`` or a tensor file [n, d_model], e.g. an
output dictionary's encoder rows) and an input dictionary with decoder rows D [n_in, d_model]
(``--inputs``, a tensor file), a unit computes ``hooked_bilinear.features.feature_interactions``:
the ``top_k`` input features with the largest rows of M_u = D Q_u Dᵀ and M_u restricted to them.
A unit is (layer, ``--chunk`` consecutive outputs); its shard holds ``indices [c, top_k]`` and
``M [c, top_k, top_k]``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import torch

from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.base import Job, load_model
from hooked_bilinear.jobs.spectra import _digest, load_directions, parse_layers

if TYPE_CHECKING:
    import pandas as pd

    from hooked_bilinear.jobs.store import Store


class InteractionsJob(Job):
    """Top-k feature interaction matrices over outputs × layers (see the module docstring)."""

    kind = "interactions"

    def __init__(self, model: str, inputs: str, outputs: str = "unembed", layers: str = "all", top_k: int = 32,
                 chunk: int = 64):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise JobError(f"--top-k {top_k!r} must be a positive int")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise JobError(f"--chunk {chunk!r} must be a positive int")
        self.model_name, self.inputs, self.outputs, self.layers_arg = model, inputs, outputs, layers
        self.top_k, self.chunk = top_k, chunk

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="bundled name, local folder, or Hub id")
        parser.add_argument("--inputs", required=True, help="input dictionary decoder [n_in, d_model] (FILE or FILE::KEY)")
        parser.add_argument("--outputs", default="unembed", help="'unembed' or a tensor file [n, d_model]")
        parser.add_argument("--layers", default="all", help="'all' or comma-separated layer indices")
        parser.add_argument("--top-k", type=int, default=32, help="input features kept per output")
        parser.add_argument("--chunk", type=int, default=64, help="outputs per unit")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "InteractionsJob":
        return cls(args.model, args.inputs, args.outputs, args.layers, args.top_k, args.chunk)

    def setup(self, device: torch.device) -> None:
        model = load_model(self.model_name, device)
        cfg = model.cfg
        if cfg.attn_only or cfg.gate is not None:
            raise JobError(f"model {self.model_name!r} has no bilinear MLPs (attn_only={cfg.attn_only}, gate={cfg.gate!r})")
        self.layers = parse_layers(self.layers_arg, cfg.n_layers)
        if self.inputs == "unembed":
            raise JobError("--inputs must be a dictionary decoder file [n_in, d_model], not a direction set")
        with torch.no_grad():
            self.D = load_directions(self.inputs, cfg.d_model).to(device=device, dtype=model.W_U.dtype)
            self.U = load_directions(self.outputs, cfg.d_model, model).to(device=device, dtype=model.W_U.dtype)
        self.model, self.n = model, self.U.shape[0]

    def params(self) -> dict[str, Any]:
        return {"model": self.model_name, "inputs": self.inputs, "inputs_digest": _digest(self.D),
                "outputs": self.outputs, "outputs_digest": _digest(self.U), "n_outputs": self.n,
                "layers": self.layers, "top_k": self.top_k, "chunk": self.chunk}

    def units(self) -> list[str]:
        return [f"L{layer:03d}-D{s:07d}" for layer in self.layers for s in range(0, self.n, self.chunk)]

    def run_unit(self, unit: str):
        from hooked_bilinear.features.interactions import feature_interactions

        layer, start = int(unit[1:4]), int(unit[6:])
        B = self.model.bilinear(layer)
        idx, Ms = [], []
        with torch.no_grad():
            for u in self.U[start : start + self.chunk]:
                i, M = feature_interactions(B, self.D, u, top_k=self.top_k)
                idx.append(i)
                Ms.append(M)
        return {"indices": torch.stack(idx), "M": torch.stack(Ms)}, {"layer": layer, "start": start, "count": len(idx)}

    @classmethod
    def table(cls, manifest: dict, records: dict[str, dict], store: "Store", **options: Any) -> "pd.DataFrame":
        """One row per (layer, output): ``indices`` [top_k] and ``M`` [top_k, top_k] as numpy arrays."""
        import pandas as pd

        cols: dict[str, list] = {"layer": [], "output": [], "indices": [], "M": []}
        for unit in sorted(records):
            meta, shard = records[unit]["meta"], store.load_shard(unit)
            c = meta["count"]
            cols["layer"] += [meta["layer"]] * c
            cols["output"] += list(range(meta["start"], meta["start"] + c))
            cols["indices"] += list(shard["indices"].numpy())
            cols["M"] += list(shard["M"].numpy())
        return pd.DataFrame(cols).sort_values(["layer", "output"], ignore_index=True)
