"""Our own checkpoint format: `config.json` (HookedBilinearConfig fields) + `model.safetensors`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hooked_bilinear.config import ConfigError, HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.build import build_model
from hooked_bilinear.loading.shapes import check_config_shapes

FORMAT_KEY = "hooked_bilinear_format"
FORMAT_VERSION = 1


def save_native(model, directory: Union[str, os.PathLike]) -> None:
    """Write `model` to `directory` as config.json + model.safetensors (+ tokenizer files)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.cfg.to_dict()
    config[FORMAT_KEY] = FORMAT_VERSION
    config["architecture"] = type(model).__name__
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: _own_storage(v.detach().cpu()) for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save(str(directory))


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor owning its storage: loaded models may hold views into one checkpoint
    tensor (W_l, W_r = halves of `mlp.w`), which safetensors refuses to save as shared memory."""
    tensor = tensor.contiguous()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def is_native(config: dict[str, Any]) -> bool:
    return FORMAT_KEY in config


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no config.json in {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, expected an object of config keys")
    return config


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never pickle); corrupt or truncated files raise CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from None


def load_native(directory: Union[str, os.PathLike], device: Optional[str] = None,
                dtype: Optional[Union[str, torch.dtype]] = None, nonfinite: str = "warn", tokenizer: bool = True,
                **overrides: Any):
    """Load a model saved by `save_pretrained` (bit-identical weights).

    Args:
        directory: folder with config.json + model.safetensors (+ tokenizer.json).
        device, dtype: where and in which float type the weights end up (default: as saved).
        nonfinite: "warn", "raise" or "ignore" when a tensor holds NaN or inf.
        tokenizer: attach the saved tokenizer.json, if any.
        **overrides: config fields to replace (None values are ignored).

    Raises:
        CheckpointError: missing/corrupt files, a config size that contradicts a tensor's shape (the
            field is named, checked before anything is built), or tensors that do not match the config.
    """
    from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP, HookedBilinearMLPConfig
    from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

    directory = Path(directory)
    config = read_config(directory / "config.json")
    config.pop(FORMAT_KEY, None)
    architecture = config.pop("architecture", "HookedBilinearTransformer")
    config.update({k: v for k, v in overrides.items() if v is not None})
    if device is not None:
        config["device"] = str(device)
    if dtype is not None:
        config["dtype"] = str(dtype).removeprefix("torch.")
    if architecture == "HookedBilinearTransformer":
        # derived (always n_heads: grouped-query attention is refused); a stale saved value would turn an
        # edited n_heads into an error about a field the user never set
        config.pop("n_key_value_heads", None)
    if architecture not in ("HookedBilinearMLP", "HookedBilinearTransformer"):
        raise CheckpointError(f"{directory}: unknown architecture {architecture!r}")
    try:
        if architecture == "HookedBilinearMLP":
            model_cls, cfg = HookedBilinearMLP, HookedBilinearMLPConfig(**config)
        else:
            model_cls, cfg = HookedBilinearTransformer, HookedBilinearConfig.from_dict(config)
    except (ConfigError, TypeError) as e:  # name the file: a bare ConfigError does not say where it came from
        given = f" (with overrides {sorted(overrides)})" if overrides else ""
        raise CheckpointError(f"{directory / 'config.json'}{given} is not a valid {architecture} config: {e}") from e
    state = read_safetensors(directory / "model.safetensors")
    if architecture == "HookedBilinearTransformer":
        check_config_shapes(cfg, state, str(directory / "config.json"))
    model = build_model(model_cls, cfg, state, str(directory), nonfinite=nonfinite)
    saved = load_local_tokenizer(directory) if tokenizer else None
    if saved is not None:
        model.set_tokenizer(saved)
    return model


def load_local_tokenizer(directory: Path):
    """A `tokenizers.Tokenizer` from `directory/tokenizer.json`, or None."""
    path = Path(directory) / "tokenizer.json"
    if not path.exists():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(f"{path} is not a valid tokenizers JSON file: {e}") from None
