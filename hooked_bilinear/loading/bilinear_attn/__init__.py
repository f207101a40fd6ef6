"""Public fully bilinear (softmax-free attention) checkpoints, loaded into `HookedBilinearConfig(attention="bilinear")`.

Layouts (keys, shapes and scale conventions in docs/spec/checkpoints.md):

- `bilinear-vpd` (`henrylhale/bilinear-vpd` phase1): single head, bilinear MLPs, per-channel scale norms;
- `melephant-attentionlm` (`melephant/2l-bilinear-attn-normalised*`, used by `tdooms/tensor-similarity`):
  attention-only, RoPE, q/k biases, a running-energy final norm folded into W_U;
- `elriggs-attentionlm` (`Elriggs/bilinear_atnn_only_2L_Pile`): attention-only, RoPE, BatchNorm on q/k
  (folded into W_Q*/W_K*), a LayerNorm before the unembedding (`ln_final`, `final_norm_only=True`).

These checkpoints are `torch.save` pickles: they are read with `torch.load(weights_only=True)` only, which
rebuilds tensors and refuses (without running) anything else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

import torch

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.bilinear_attn import elriggs, melephant, vpd
from hooked_bilinear.loading.bilinear_attn._pickle import read_state_dict

# Checked in this order: an elriggs state dict also has melephant's marker `layers.0.q1.weight`.
LAYOUTS = {vpd.NAME: vpd, elriggs.NAME: elriggs, melephant.NAME: melephant}
SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_STEP = re.compile(r"step_(\d+)\.pt$")


def detect_layout(state: dict, config: dict, source: str):
    """The layout module whose marker tensor is in `state`.

    Raises:
        CheckpointError: no known layout (the message lists a few keys and what each layout expects).
    """
    for layout in LAYOUTS.values():
        if layout.matches(state, config):
            return layout
    keys = sorted(state)[:6]
    raise CheckpointError(
        f"{source}: unknown bilinear-attention checkpoint layout (keys {keys}...): expected "
        f"{vpd.MARKER!r} ({vpd.NAME}), {elriggs.MARKER!r} ({elriggs.NAME}) or {melephant.MARKER!r} ({melephant.NAME})")


def _pick_checkpoint(folder: Path, step: Optional[int]) -> Path:
    """`checkpoints/step_N.pt` (step N, default the last), else `model_final.pt`, else the only .pt file."""
    steps = {int(m.group(1)): p for p in folder.glob("checkpoints/step_*.pt") if (m := _STEP.search(p.name))}
    if step is not None:
        if step not in steps:
            raise CheckpointError(f"{folder}: no checkpoint of step {step} in checkpoints/ (step_N.pt, any zero "
                                  f"padding); steps found: {sorted(steps)[:10]}")
        return steps[step]
    if steps:
        return steps[max(steps)]
    if (folder / "model_final.pt").exists():
        return folder / "model_final.pt"
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES)
    if len(files) == 1:
        return files[0]
    raise CheckpointError(f"{folder}: expected checkpoints/step_*.pt, model_final.pt or a single .pt file, "
                          f"found {[p.name for p in files][:8]}")


def _cached_folder(repo_id: str, cache_dir=None) -> Optional[Path]:
    """The snapshot folder of a Hub repo (model or dataset) in the local HF cache, without network calls."""
    from huggingface_hub import try_to_load_from_cache

    for repo_type in ("model", "dataset"):
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, repo_type=repo_type)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def resolve_checkpoint(name_or_path: Union[str, os.PathLike], step: Optional[int] = None,
                       cache_dir=None) -> tuple[Path, dict]:
    """(the .pt file, the parsed config.json or {}) for a file, a folder or a cached Hub repo."""
    from hooked_bilinear.loading.native import read_config

    path = Path(name_or_path).expanduser()
    if not path.exists():
        name = str(name_or_path)
        folder = _cached_folder(name, cache_dir) if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None
        if folder is None:
            raise CheckpointError(
                f"{name!r} is neither a local file or folder nor a Hub repo in the local HF cache. These "
                "checkpoints are pickles and are never fetched implicitly: download the repo first, e.g. "
                f"huggingface_hub.snapshot_download({name!r}, repo_type='dataset' or 'model'), then pass its id or folder")
        path = folder
    ckpt = _pick_checkpoint(path, step) if path.is_dir() else path
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.json").exists():
            return ckpt, read_config(folder / "config.json")
    return ckpt, {}


def load_bilinear_attention(
    name_or_path: Union[str, os.PathLike],
    *,
    layout: Optional[str] = None,
    step: Optional[int] = None,
    n_ctx: Optional[int] = None,
    rotary_base: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[Union[str, torch.dtype]] = None,
    nonfinite: str = "warn",
    cache_dir: Optional[Union[str, os.PathLike]] = None,
):
    """Load a public bilinear-attention checkpoint as a HookedBilinearTransformer (eval mode).

    Args:
        name_or_path: a `.pt` file, a folder (`config.json` + `checkpoints/step_*.pt`, or `model_final.pt`),
            or a Hub id already in the local HF cache (model or dataset repo).
        layout: force "bilinear-vpd", "elriggs-attentionlm" or "melephant-attentionlm" (default: detected
            from the tensor names).
        step: which `checkpoints/step_N.pt` of a folder (default: the last one).
        n_ctx: the context length to build (RoPE tables are not stored; default from config.json, else
            the layout's training length).
        rotary_base: RoPE base (default from config.json, else 10000).
        cache_dir: the HF cache to look a Hub id up in (default HF_HUB_CACHE); nothing is downloaded.

    Raises:
        CheckpointError: missing files, a pickle holding anything but tensors (refused, never run), an
            unknown layout, a config the loader cannot map (e.g. attn_type='softmax'), or missing /
            unknown / mis-shaped tensors, each named.

    Example:
        >>> model = load_bilinear_attention("path/to/2l-bilinear-attn-normalised-v2")  # doctest: +SKIP
        >>> model.cfg.attention, model.W_Q1.shape  # doctest: +SKIP
    """
    from hooked_bilinear.loading.build import build_model

    ckpt, config = resolve_checkpoint(name_or_path, step, cache_dir)
    state = read_state_dict(ckpt)
    if layout is not None and layout not in LAYOUTS:
        raise CheckpointError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    fmt = LAYOUTS[layout] if layout else detect_layout(state, config, str(ckpt))
    source = f"{ckpt} ({fmt.NAME} layout)"
    converted = fmt.convert(state, config, source, n_ctx=n_ctx, rotary_base=rotary_base,
                            device=str(device or "cpu"), dtype=dtype or torch.float32, name=str(name_or_path))
    model = build_model(converted.model_cls, converted.cfg, converted.state, source, nonfinite=nonfinite)
    return model.eval()


__all__ = ["LAYOUTS", "detect_layout", "load_bilinear_attention", "resolve_checkpoint"]
