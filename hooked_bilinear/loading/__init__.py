"""Loading checkpoints: bundled zoo models, our own format, and (see `hub`) the public formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.native import is_native, load_native, read_config, save_native

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package (loadable offline)."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").exists())


def load_pretrained(name_or_path: str | os.PathLike, **kwargs: Any):
    """Load a model by bundled name, local folder, or Hub id.

    Resolution order: a bundled zoo name; a local folder (our format, or a public format detected
    from its config keys); a Hub id (through the local HF cache, honouring HF_HUB_OFFLINE).
    """
    name = str(name_or_path)
    if name in bundled_models():
        return load_native(ZOO_DIR / name, **kwargs)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        if is_native(read_config(path / "config.json")):
            return load_native(path, **kwargs)
    try:
        from hooked_bilinear.loading.hub import load_public
    except ImportError:  # the public-format loader is optional until it exists
        load_public = None
    if load_public is not None:
        return load_public(name, **kwargs)
    if path.exists():
        raise CheckpointError(f"{name} is not a hooked_bilinear checkpoint folder (config.json + model.safetensors)")
    raise CheckpointError(f"unknown model {name!r}; bundled models: {bundled_models()}")


__all__ = ["ZOO_DIR", "bundled_models", "load_native", "load_pretrained", "save_native"]
