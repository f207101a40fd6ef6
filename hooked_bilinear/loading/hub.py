"""Load the public pretrained bilinear models (Pearce, Dooms et al. 2025) into hooked models.

`load_public` accepts a Hub id (`tdooms/ts-medium`, `tdooms/mnist/<model>`), a local folder or a
local file, detects the checkpoint format from the keys of its config.json, converts the tensors
to our layout (see `loading.formats`) and builds the model without random initialisation.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Union

import torch

from hooked_bilinear.errors import CheckpointError, InputError
from hooked_bilinear.loading.build import build_model
from hooked_bilinear.loading.formats import detect_format
from hooked_bilinear.loading.native import is_native, load_native, read_config, read_safetensors
from hooked_bilinear.loading.resolve import Checkpoint, HubEntryMissing, cached_subfolders, resolve
from hooked_bilinear.loading.tokenizers import load_tokenizer, pad_token, read_tokenizer


def load_public(
    name_or_path: Union[str, os.PathLike],
    *,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[Union[str, torch.dtype]] = None,
    fold_ln: bool = False,
    scale_attn: Optional[bool] = None,
    subfolder: Optional[str] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    nonfinite: str = "warn",
    tokenizer: bool = True,
    **kw: Any,
):
    """Load a public bilinear checkpoint as a HookedBilinearTransformer (or HookedBilinearMLP).

    Args:
        name_or_path: a Hub id (`owner/repo`, or `owner/repo/subfolder`), a local folder with
            config.json + model.safetensors, or a local .safetensors file next to its config.json.
        device: where the weights go (default "cpu").
        dtype: float type of the weights (default float32).
        fold_ln: fold norm weights into the following matrices (`model.fold_layer_norm()`).
        scale_attn: override the attention-output scale `s = 1/sqrt(2 n_layer)`, folded into W_O.
            None follows the checkpoint: for the current format, config `scale_attn` absent or true
            applies `s`, false does not; the older TinyStories format never applies it.
        subfolder: a model inside a repo or folder (e.g. `tdooms/mnist` holds one per subfolder).
        revision: Hub branch, tag or commit.
        cache_dir: HF cache folder (default HF_HUB_CACHE). With HF_HUB_OFFLINE=1 only the cache
            is read and nothing touches the network.
        nonfinite: "warn", "raise" or "ignore" when a tensor holds NaN or inf.
        tokenizer: attach the model's tokenizer when it can be found (a warning otherwise).

    Returns:
        The hooked model, `cfg.model_name` set to the id and `cfg.tokenizer_name` to the tokenizer key.

    Raises:
        CheckpointError: files that are missing (offline: not cached), corrupt, pickled, in an
            unknown format, of an unsupported architecture, or with missing / unknown /
            mis-shaped tensors; each names the id, file or tensor.

    Example:
        >>> model = load_public("tdooms/ts-medium")  # doctest: +SKIP
        >>> logits, cache = model.run_with_cache("once upon a time")  # doctest: +SKIP
    """
    if kw:
        raise TypeError(f"load_public() got unexpected keyword arguments {sorted(kw)}")
    ckpt = resolve(name_or_path, subfolder=subfolder, revision=revision, cache_dir=cache_dir)
    config = read_config(_config_file(ckpt))
    if is_native(config):
        if scale_attn is not None:
            raise CheckpointError(f"{ckpt.name} is in hooked_bilinear's own format: scale_attn does not apply")
        ckpt.weights()
        if tokenizer and ckpt.repo_id is not None:
            ckpt.file("tokenizer.json", required=False)
        model = load_native(ckpt.folder, device=device, dtype=dtype, nonfinite=nonfinite, tokenizer=tokenizer)
    else:
        fmt = detect_format(config, ckpt.name)
        weights = ckpt.weights()
        tensors = read_safetensors(weights)
        converted = fmt.convert(config, tensors, f"{ckpt.name} ({fmt.NAME} format)", name=ckpt.name,
                                scale_attn=scale_attn, device=str(device or "cpu"), dtype=dtype or torch.float32)
        model = build_model(converted.model_cls, converted.cfg, converted.state, str(weights), nonfinite=nonfinite)
        if tokenizer and converted.tokenizer:
            _attach_tokenizer(model, converted.tokenizer, ckpt)
    if fold_ln and hasattr(model, "fold_layer_norm"):
        model.fold_layer_norm()
    return model


def _config_file(ckpt: Checkpoint):
    """config.json, or an error listing the models of a multi-model repo (e.g. tdooms/mnist)."""
    try:
        return ckpt.file("config.json")
    except CheckpointError as e:
        if ckpt.repo_id is None or ckpt.subfolder:
            raise
        online = isinstance(e, HubEntryMissing)  # the Hub answered, so listing it is quick
        subfolders = cached_subfolders(ckpt.repo_id, ckpt.revision, ckpt.cache_dir, online=online)
        if not subfolders:
            raise
        raise CheckpointError(
            f"{ckpt.repo_id} holds one model per subfolder: pass subfolder= one of {subfolders[:12]}"
            f"{'...' if len(subfolders) > 12 else ''}"
        ) from None


def _attach_tokenizer(model, key: str, ckpt: Checkpoint) -> None:
    """Attach the tokenizer: a tokenizer.json next to the checkpoint first, else the Hub repo of `key`."""
    try:
        local = ckpt.folder / "tokenizer.json" if ckpt.repo_id is None else None
        if local is not None and local.exists():
            tok = read_tokenizer(local, pad_token(key))
        else:
            tok = load_tokenizer(key, cache_dir=ckpt.cache_dir)
        model.set_tokenizer(tok)
    except (CheckpointError, InputError) as e:
        warnings.warn(f"{ckpt.name}: loaded without a tokenizer ({e})", stacklevel=3)
