"""`load_sae` (SAELens folders, tdooms scope repos, bundled dictionaries) and `save_sae`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from hooked_bilinear.config import _parse_dtype
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.features.formats import saelens, scope
from hooked_bilinear.features.sae import SAE

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "zoo"  # zoo/<model>/saes/<name>/


def bundled_saes() -> dict[str, Path]:
    """Dictionaries shipped with the package: `"<model>/<name>"` -> folder (`zoo/<model>/saes/<name>`)."""
    return {f"{p.parent.parent.name}/{p.name}": p
            for p in sorted(BUNDLED_DIR.glob("*/saes/*")) if (p / saelens.CFG).exists() or (p / scope.CONFIG).exists()}


def load_sae(name_or_path: Union[str, os.PathLike], *, layer: Optional[int] = None, point: Optional[str] = None,
             expansion: Optional[int] = None, k: Optional[int] = None, tag: Optional[str] = None,
             subfolder: Optional[str] = None, revision: Optional[str] = None,
             cache_dir: Optional[Union[str, os.PathLike]] = None, device: Optional[str] = None,
             dtype: Any = None) -> SAE:
    """Load an SAE or transcoder: a bundled name ("tiny-lm/L1-mlp-out"), a local SAELens folder
    (`cfg.json`) or scope folder (`config.json`), or a Hub repo (SAELens layout, or a tdooms scope repo
    addressed by `layer`/`point`/`expansion`/`k` or `subfolder`).

    Raises:
        CheckpointError: missing or corrupt files, an architecture or config field we do not
            implement (named), or tensors that do not match the config (named, with both shapes).

    Example:
        >>> sae = load_sae("tiny-lm/L1-mlp-out")
        >>> sae.cfg.hook_name
        'blocks.1.hook_mlp_out'
    """
    from hooked_bilinear.loading.native import read_config, read_safetensors
    from hooked_bilinear.loading.resolve import Checkpoint, resolve

    if subfolder is None and layer is not None:
        if None in (point, expansion, k):
            raise CheckpointError("load_sae needs point, expansion and k together with layer (or a subfolder)")
        subfolder = scope.sae_subfolder(layer, point, expansion, k, tag)
    name = str(name_or_path)
    bundled = bundled_saes()
    path = bundled.get(name) or Path(name).expanduser()
    if path.exists():
        folder = path / subfolder if subfolder else path
        if folder.is_file():
            folder = folder.parent
        if not ((folder / saelens.CFG).exists() or (folder / scope.CONFIG).exists()):
            raise CheckpointError(f"{folder} has neither {saelens.CFG} (SAELens) nor {scope.CONFIG} (scope): "
                                  "not an SAE folder")
        ckpt = Checkpoint(name=name if name in bundled else str(folder), folder=folder)
    elif "/" in name and name.split("/")[0] in {b.split("/")[0] for b in bundled}:
        raise CheckpointError(f"no bundled dictionary {name!r}; bundled: {sorted(bundled)}")
    else:
        ckpt = resolve(name_or_path, subfolder=subfolder, revision=revision, cache_dir=cache_dir)
    cfg_file = ckpt.file(saelens.CFG, required=False)
    if cfg_file is not None:
        source = f"{ckpt.name} (SAELens)"
        cfg, _ = saelens.config_from_saelens(read_config(cfg_file), source)
        weights = ckpt.file(saelens.WEIGHTS)
        state = saelens.state_from_saelens(read_safetensors(weights), cfg)
    else:
        source = f"{ckpt.name} (scope TopK SAE)"
        config = read_config(ckpt.file(scope.CONFIG))
        cfg = scope.config_from_scope(config, source)
        state = scope.state_from_scope(read_safetensors(ckpt.file(scope.WEIGHTS)), cfg, config, source)
    if not (cfg_file is not None and cfg.model_name != "custom"):
        cfg.model_name = ckpt.name
    cfg.device = str(device or "cpu")
    cfg.dtype = _parse_dtype(dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    return _build(cfg, state, source)


def _build(cfg, state: dict[str, torch.Tensor], source: str) -> SAE:
    from hooked_bilinear.loading.build import build_model

    return build_model(SAE, cfg, state, source)


def save_sae(sae: SAE, path: Union[str, os.PathLike], format: str = "saelens") -> None:
    """Write `sae` to folder `path` as "saelens" or "scope" (see `SAE.save`).

    A `cfg.normalize` scale is folded into the weights (exact): `W_enc/n`, `n·W_dec`, `n·b_dec`.

    Raises:
        CheckpointError: an unknown format, or a dictionary the format cannot express (named).
    """
    writers = {"saelens": saelens.save_saelens, "scope": scope.save_scope}
    if format not in writers:
        raise CheckpointError(f"format={format!r}; expected one of {sorted(writers)}")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in sae.state_dict().items()}
    n = sae.cfg.normalize
    if n is not None:
        state["W_enc"] = state["W_enc"] / n
        state["W_dec"] = state["W_dec"] * n
        state["b_dec"] = state["b_dec"] * n
    writers[format](sae, Path(path), state)
