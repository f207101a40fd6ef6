"""Writers of tiny checkpoints in exactly the public formats of checkpoints.md, and a fake HF cache.

Random weights, real key names, shapes and config keys. Nothing here imports the loader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save_file

ABSENT = object()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SIZES = dict(n_layer=2, n_head=2, d_model=16, d_hidden=24, n_ctx=12)
N_VOCAB = 40


def _randn(gen: torch.Generator, *shape: int, std: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


def _write(folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def _attention(gen, tensors, i: int, d: int, d_head: int, bias: bool) -> None:
    p = f"transformer.h.{i}.attn"
    tensors[f"{p}.qkv.weight"] = _randn(gen, 3 * d, d, std=d**-0.5)
    tensors[f"{p}.o.weight"] = _randn(gen, d, d, std=d**-0.5)
    tensors[f"{p}.rotary.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, d_head, 2).float() / d_head))
    if bias:
        tensors[f"{p}.qkv.bias"] = _randn(gen, 3 * d, std=0.1)


def write_2024_10(folder: Path, *, bias: bool = False, gate: Optional[str] = None, scale_attn: Any = ABSENT,
                  normalization: bool = True, stray: bool = False, tokenizer: str = "ts-4096", seed: int = 0,
                  embed_std: float = 1.0, **sizes: int) -> Path:
    """The current LM format (checkpoints.md §1)."""
    s = {**SIZES, **sizes}
    L, d, h = s["n_layer"], s["d_model"], s["d_hidden"]
    gen = torch.Generator().manual_seed(seed)
    config = {**s, "bilinear": True, "gate": gate, "bias": bias, "normalization": normalization,
              "tokenizer": tokenizer, "repo": "tdooms/test", "dataset": "ts", "architectures": ["Transformer"],
              "torch_dtype": "float32", "transformers_version": "4.46.2"}
    if scale_attn is not ABSENT:
        config["scale_attn"] = scale_attn
    t = {"transformer.wte.weight": _randn(gen, N_VOCAB, d, std=embed_std), "lm_head.weight": _randn(gen, N_VOCAB, d, std=0.1)}
    for i in range(L):
        _attention(gen, t, i, d, d // s["n_head"], bias)
        t[f"transformer.h.{i}.mlp.w.weight"] = _randn(gen, 2 * h, d, std=d**-0.5)
        t[f"transformer.h.{i}.mlp.p.weight"] = _randn(gen, d, h, std=h**-0.5)
        if bias:
            t[f"transformer.h.{i}.mlp.w.bias"] = _randn(gen, 2 * h, std=0.1)
            t[f"transformer.h.{i}.mlp.p.bias"] = _randn(gen, d, std=0.1)
        if stray:
            t[f"transformer.h.{i}.n1.norm.linear.weight"] = _randn(gen, d, d)
            t[f"transformer.h.{i}.n2.norm.linear.weight"] = _randn(gen, d, d)
    if stray:
        t["transformer.n_f.norm.linear.weight"] = _randn(gen, d, d)
    return _write(folder, config, t)


def write_2024_06(folder: Path, *, mlp: str = "blp", normalization: Optional[str] = "rms", norm_bias: bool = False,
                  mlp_bias: bool = False, learned_pos: bool = False, seed: int = 0, embed_std: float = 1.0,
                   **sizes: int) -> Path:
    """The older TinyStories format (checkpoints.md §2); `learned_pos` adds `transformer.wpe.weight`."""
    s = {**SIZES, **sizes}
    L, d, h = s["n_layer"], s["d_model"], s["d_hidden"]
    gen = torch.Generator().manual_seed(seed)
    config = {**s, "n_vocab": N_VOCAB, "mlp": mlp, "normalization": normalization, "norm_bias": norm_bias,
              "mlp_bias": mlp_bias, "noise": None, "modifier": None, "attn_dropout": 0.0,
              "architectures": ["Transformer"], "torch_dtype": "float32"}
    t = {"transformer.wte.weight": _randn(gen, N_VOCAB, d, std=embed_std), "lm_head.weight": _randn(gen, N_VOCAB, d, std=0.1)}
    if learned_pos:
        t["transformer.wpe.weight"] = _randn(gen, s["n_ctx"], d, std=0.5)
    norms = [f"transformer.h.{i}.n{j}.norm" for i in range(L) for j in (1, 2)] + ["transformer.n_f.norm"]
    for i in range(L):
        _attention(gen, t, i, d, d // s["n_head"], bias=False)
        if learned_pos:
            del t[f"transformer.h.{i}.attn.rotary.inv_freq"]
        t[f"transformer.h.{i}.mlp.w.weight"] = _randn(gen, 2 * h, d, std=d**-0.5)
        t[f"transformer.h.{i}.mlp.o.weight"] = _randn(gen, d, h, std=h**-0.5)
        if mlp_bias:
            t[f"transformer.h.{i}.mlp.w.bias"] = _randn(gen, 2 * h, std=0.1)
    if normalization is not None:
        for n in norms:
            t[f"{n}.weight"] = 1.0 + _randn(gen, d, std=0.2)
            # nn.LayerNorm always has a bias; the RMSNorm of that code only with norm_bias
            if norm_bias or normalization == "ln":
                t[f"{n}.bias"] = _randn(gen, d, std=0.2)
    return _write(folder, config, t)


def write_mnist(folder: Path, *, d_hidden: int = 20, n_layer: int = 1, bias: bool = False, residual: bool = False,
                seed: int = 0) -> Path:
    """An image model (checkpoints.md §3), config as the reference code's dataclass writes it."""
    gen = torch.Generator().manual_seed(seed)
    h = d_hidden
    config = {"lr": 0.001, "wd": 0.5, "epochs": 10, "batch_size": 2048, "d_hidden": h, "n_layer": n_layer,
              "d_input": 784, "d_output": 10, "bias": bias, "residual": residual, "device": "cuda", "seed": 42}
    t = {"embed.weight": _randn(gen, h, 784, std=784**-0.5), "head.weight": _randn(gen, 10, h, std=h**-0.5)}
    for i in range(n_layer):
        t[f"blocks.{i}.weight"] = _randn(gen, 2 * h, h, std=h**-0.5)
        if bias:
            t[f"blocks.{i}.bias"] = _randn(gen, 2 * h, std=0.1)
    return _write(folder, config, t)


def put_in_hub_cache(cache_dir: Path, repo_id: str, source: Path, subfolder: Optional[str] = None,
                     commit: str = COMMIT) -> Path:
    """Copy the files of `source` into the HF hub cache layout, as `hf_hub_download` leaves them.

    `cache_dir/models--{owner}--{name}/snapshots/{commit}/[subfolder/]file` and
    `refs/main` holding the commit hash (real caches symlink snapshot files to `blobs/`;
    plain files are read the same way).
    """
    root = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    target = snapshot / subfolder if subfolder else snapshot
    target.mkdir(parents=True, exist_ok=True)
    for file in Path(source).iterdir():
        if file.is_file():
            shutil.copy(file, target / file.name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


class Exploit:
    """A pickle payload that creates the file `marker` if it is ever unpickled (loading must never run it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
