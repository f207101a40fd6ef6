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
    """Load a model by bundled name, local folder or file, or Hub id.

    Resolution order: a bundled zoo name; a local folder in our format; anything else goes to
    `load_public` (public formats detected from config keys, local or through the HF cache,
    honouring HF_HUB_OFFLINE). `fold_ln=True` folds the norm weights in every case. The model is
    returned in eval mode, as TL's patching and logit-lens tools expect for an analysis model.

    Raises:
        CheckpointError: the name is none of these, or its files are missing or do not match.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    folder = ZOO_DIR / name if name in bundled_models() else path
    if not kwargs.get("subfolder") and folder.is_dir() and (folder / "config.json").exists() \
            and is_native(read_config(folder / "config.json")):
        fold_ln = kwargs.pop("fold_ln", False)
        for hub_only in ("subfolder", "revision", "cache_dir"):  # meaningless for a local folder
            kwargs.pop(hub_only, None)
        model = load_native(folder, **kwargs)
        if fold_ln and hasattr(model, "fold_layer_norm"):
            model.fold_layer_norm()
        return model.eval()
    from hooked_bilinear.loading.hub import load_public

    return load_public(name, **kwargs).eval()


def load_bilinear_attention(name_or_path, **kwargs: Any):
    """Load a public softmax-free bilinear-attention checkpoint (torch.save, read with weights_only=True);
    see `hooked_bilinear.loading.bilinear_attn.load_bilinear_attention`."""
    from hooked_bilinear.loading.bilinear_attn import load_bilinear_attention as _load

    return _load(name_or_path, **kwargs)


def list_pretrained(as_frame: bool = True):
    """Known Hub ids with their sizes (a pandas DataFrame); see `loading.registry`."""
    from hooked_bilinear.loading.registry import list_pretrained as _list

    return _list(as_frame)


__all__ = ["ZOO_DIR", "bundled_models", "list_pretrained", "load_bilinear_attention", "load_native", "load_pretrained", "save_native"]
