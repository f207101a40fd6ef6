"""Job kind "spectra": the top-k eigenpairs of Q_u for a set of directions u, at every chosen layer.

    python -m hooked_bilinear.jobs spectra MODEL --directions unembed --layers all --k 8 --out DIR
    torchrun --nproc-per-node 2 -m hooked_bilinear.jobs spectra MODEL ... --out DIR

A unit is (layer, a chunk of ``--chunk`` consecutive directions): ``model.bilinear(layer)
.spectra(U_chunk, top=k, seed=seed + start)`` with the chunk as one batch, so a unit's result
depends only on the unit. Its shard holds ``values [c, k]``, ``vectors [c, d_model, k]`` (unless
``--no-vectors``) and ``converged [c]``.

Direction sets: ``unembed`` (u = W_U[:, t] for every token t: the token logits' interaction
matrices), or a saved tensor [n, d_model] (``.safetensors`` with one tensor, or ``FILE::KEY`` to
pick one; ``.pt`` read with ``weights_only=True``).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.base import Job, load_model
from hooked_bilinear.tensor.block_krylov import SOLVER_VERSION

if TYPE_CHECKING:
    import pandas as pd

    from hooked_bilinear.jobs.store import Store

DIRECTION_SETS = ("unembed",)


def load_directions(spec: str, d_model: int, model=None) -> Tensor:
    """The [n, d_model] directions named by ``spec`` (a set name or a saved tensor file)."""
    if spec == "unembed":
        return model.W_U.detach().T
    path, _, key = spec.partition("::")
    p = Path(path)
    if not p.is_file():
        raise JobError(f"--directions {spec!r} is neither a direction set ({', '.join(DIRECTION_SETS)}) "
                       "nor an existing tensor file (.safetensors, or .pt)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        if key:
            if key not in tensors:
                raise JobError(f"--directions {spec!r}: {p.name} has no tensor {key!r}; it holds {sorted(tensors)}")
            U = tensors[key]
        elif len(tensors) == 1:
            U = next(iter(tensors.values()))
        else:
            raise JobError(f"--directions {spec!r}: {p.name} holds {sorted(tensors)}; pick one as FILE::KEY")
    else:
        try:
            U = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling refusal is bad input here
            raise JobError(f"--directions {spec!r} could not be read as a tensor with weights_only=True ({e})") from e
        if not isinstance(U, Tensor):
            raise JobError(f"--directions {spec!r} holds a {type(U).__name__}, not a tensor [n, d_model]")
    if U.ndim == 1:
        U = U[None]
    if U.ndim != 2 or U.shape[1] != d_model or not U.is_floating_point():
        raise JobError(f"--directions {spec!r} has shape {tuple(U.shape)} ({U.dtype}) but must be a floating "
                       f"tensor [n, d_model={d_model}]")
    return U


def parse_layers(arg: str | list[int], n: int) -> list[int]:
    """``"all"`` or comma-separated layer indices (or a list), each in [0, n) and listed once."""
    if arg == "all":
        return list(range(n))
    try:
        layers = [int(x) for x in str(arg).split(",")] if isinstance(arg, str) else [int(x) for x in arg]
    except ValueError as e:
        raise JobError(f"--layers {arg!r} must be 'all' or comma-separated ints") from e
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= x < n for x in layers):
        raise JobError(f"--layers {arg!r}: each layer must be in [0, {n}) and listed once")
    return layers


def _digest(U: Tensor) -> str:
    return hashlib.sha256(U.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()).hexdigest()[:16]


class SpectraJob(Job):
    """Top-k spectra of Q_u over directions × layers (see the module docstring)."""

    kind = "spectra"

    def __init__(self, model: str, directions: str = "unembed", layers: str | list[int] = "all", k: int = 8,
                 chunk: int = 64, vectors: bool = True, method: str = "auto", tol: float | None = None,
                 seed: int = 0, dtype: str | None = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise JobError(f"--k {k!r} must be a positive int")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise JobError(f"--chunk {chunk!r} must be a positive int")
        if method not in ("auto", "dense", "block"):
            raise JobError(f"--method {method!r} must be 'auto', 'dense' or 'block'")
        if dtype not in (None, "float32", "float64"):
            raise JobError(f"--dtype {dtype!r} must be float32 or float64")
        self.model_name, self.directions, self.layers_arg = model, directions, layers
        self.k, self.chunk, self.vectors, self.method, self.tol, self.seed = k, chunk, vectors, method, tol, seed
        self.dtype = dtype

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="bundled name, local folder, or Hub id")
        parser.add_argument("--directions", default="unembed",
                            help="'unembed' (every token's W_U column) or a tensor file [n, d_model] (FILE::KEY)")
        parser.add_argument("--layers", default="all", help="'all' or comma-separated layer indices")
        parser.add_argument("--k", type=int, default=8, help="eigenpairs kept per direction (largest |λ|)")
        parser.add_argument("--chunk", type=int, default=64, help="directions per unit")
        parser.add_argument("--no-vectors", dest="vectors", action="store_false", help="keep eigenvalues only")
        parser.add_argument("--method", default="auto", choices=["auto", "dense", "block"])
        parser.add_argument("--tol", type=float, default=None,
                            help="block solver eigenvalue error bound, relative to max|λ| (default 1e-5 fp32)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default: the model's")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SpectraJob":
        return cls(args.model, args.directions, args.layers, args.k, args.chunk, args.vectors, args.method,
                   args.tol, args.seed, args.dtype)

    def setup(self, device: torch.device) -> None:
        model = load_model(self.model_name, device, self.dtype)
        cfg = model.cfg
        if cfg.attn_only or cfg.gate is not None:
            raise JobError(f"model {self.model_name!r} has no bilinear MLPs (attn_only={cfg.attn_only}, gate={cfg.gate!r})")
        layers = parse_layers(self.layers_arg, cfg.n_layers)
        if self.k > cfg.d_model:
            raise JobError(f"--k {self.k} exceeds d_model={cfg.d_model}")
        self.model, self.layers = model, layers
        with torch.no_grad():
            self.U = load_directions(self.directions, cfg.d_model, model).to(device=device, dtype=model.W_U.dtype)
        self.n = self.U.shape[0]
        self._bt: dict[int, Any] = {}

    def params(self) -> dict[str, Any]:
        return {"model": self.model_name, "directions": self.directions, "directions_digest": _digest(self.U),
                "n_directions": self.n, "layers": self.layers, "k": self.k, "chunk": self.chunk,
                "vectors": self.vectors, "method": self.method, "tol": self.tol, "seed": self.seed,
                "dtype": str(self.U.dtype).removeprefix("torch."), "solver": SOLVER_VERSION}

    def units(self) -> list[str]:
        return [f"L{layer:03d}-D{s:07d}" for layer in self.layers for s in range(0, self.n, self.chunk)]

    def run_unit(self, unit: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
        layer, start = int(unit[1:4]), int(unit[6:])
        U = self.U[start : start + self.chunk]
        if not bool(torch.isfinite(U).all()):
            bad = (~torch.isfinite(U)).any(1).nonzero()[:, 0] + start
            raise JobError(f"directions {bad.tolist()[:5]} hold NaN or inf values")
        if layer not in self._bt:
            self._bt[layer] = self.model.bilinear(layer)
        with torch.no_grad():
            sp = self._bt[layer].spectra(U, top=self.k, vectors=self.vectors, method=self.method, tol=self.tol,
                                         seed=self.seed + start, chunk_size=U.shape[0])
        tensors = {"values": sp.values, "converged": sp.converged.to(torch.uint8)}
        if sp.vectors is not None:
            tensors["vectors"] = sp.vectors
        return tensors, {"layer": layer, "start": start, "count": int(U.shape[0]),
                         "converged": bool(sp.converged.all())}

    @classmethod
    def table(cls, manifest: dict, records: dict[str, dict], store: "Store", vectors: bool = True,
              **options: Any) -> "pd.DataFrame":
        """One row per (layer, direction): ``values`` [k] and ``vectors`` [d_model, k] as numpy arrays."""
        import pandas as pd

        cols: dict[str, list] = {"layer": [], "direction": [], "values": [], "converged": []}
        if vectors:
            cols["vectors"] = []
        for unit in sorted(records):
            meta = records[unit]["meta"]
            shard = store.load_shard(unit)
            c = meta["count"]
            cols["layer"] += [meta["layer"]] * c
            cols["direction"] += list(range(meta["start"], meta["start"] + c))
            cols["values"] += list(shard["values"].numpy())
            cols["converged"] += shard["converged"].bool().tolist()
            if vectors:
                if "vectors" not in shard:
                    raise JobError(f"{store.root} was run with --no-vectors; open it with vectors=False")
                cols["vectors"] += list(shard["vectors"].numpy())
        return pd.DataFrame(cols).sort_values(["layer", "direction"], ignore_index=True)
