"""Sibling models shipped next to a zoo model in one `variants.safetensors` file.

A zoo card can make claims that need more than one model (the same recipe under other seeds, an
ablated recipe). Those models are small, so they ship in `<zoo>/<name>/variants.safetensors`: every
tensor is stored as `<variant>.<parameter>`, and the file's metadata holds each variant's config as
JSON, so the file alone rebuilds them (no pickle).

Example:
    >>> from hooked_bilinear.zoo.variants import load_variants
    >>> variants = load_variants("digits-bilinear")   # {"seed1": HookedBilinearMLP, ..., "noise_free": ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from torch import nn

from hooked_bilinear.errors import CheckpointError

FILE = "variants.safetensors"


def save_variants(models: dict[str, nn.Module], folder: Union[str, Path]) -> Path:
    """Write `models` (name -> HookedBilinearMLP or HookedBilinearTransformer) to `<folder>/variants.safetensors`."""
    from safetensors.torch import save_file

    if not models or any("." in name for name in models):
        raise ValueError(f"variant names must be non-empty and contain no '.', got {sorted(models)}")
    tensors, metadata = {}, {"format": "pt"}
    for name, model in models.items():
        metadata[name] = json.dumps({"architecture": type(model).__name__, "config": model.cfg.to_dict()})
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()})
    path = Path(folder) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_variants(name_or_folder: Union[str, Path], names: Optional[list[str]] = None) -> dict[str, nn.Module]:
    """The variant models of a zoo model (by name) or of a folder holding `variants.safetensors`.

    Args:
        name_or_folder: a bundled model's name (e.g. "digits-bilinear") or a folder.
        names: load only these variants (default: all, in file order).

    Raises:
        CheckpointError: no variants file, an unknown variant name, or a file that does not match its configs.
    """
    from safetensors import safe_open

    from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer
    from hooked_bilinear.zoo import ZOO_DIR

    folder = Path(name_or_folder)
    if not folder.is_dir():
        folder = ZOO_DIR / str(name_or_folder)
    path = folder / FILE
    if not path.exists():
        raise CheckpointError(f"{name_or_folder!r} has no {FILE} (looked in {folder})")
    classes = {"HookedBilinearMLP": HookedBilinearMLP, "HookedBilinearTransformer": HookedBilinearTransformer}
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != "format"}
        unknown = sorted(set(names or []) - set(meta))
        if unknown:
            raise CheckpointError(f"{path} has no variants {unknown}; it holds {sorted(meta)}")
        out = {}
        for name in names or list(meta):
            spec = json.loads(meta[name])
            if spec.get("architecture") not in classes:
                raise CheckpointError(f"variant {name!r} in {path} has architecture {spec.get('architecture')!r}, "
                                      f"expected one of {sorted(classes)}")
            model = classes[spec["architecture"]](spec["config"])
            state = {k[len(name) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"variant {name!r} in {path} does not match its config: {e}") from None
            out[name] = model.eval()
    return out


__all__ = ["FILE", "load_variants", "save_variants"]
