"""SAELens's on-disk format, read and written without importing SAELens (it pins transformer-lens<4).

`cfg.json` (SAELens ≥ 6): `architecture` ("standard", "topk", "jumprelu", "transcoder",
"jumprelu_transcoder"), `d_in`, `d_sae`, `dtype`, `device`, `apply_b_dec_to_input`,
`normalize_activations`, `reshape_activations`, `k` (topk), `d_out`/`hook_name_out`/`hook_layer_out`/
`hook_head_index_out` (transcoders) and `metadata` {`model_name`, `hook_name`, `hook_head_index`,
`sae_lens_version`, ...}. Older configs are flat (`hook_name` or `hook_point`, `activation_fn_str`,
`activation_fn_kwargs` {"k"}). `sae_weights.safetensors`: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
`W_dec [d_sae, d_out]`, `b_dec [d_out]`, `threshold [d_sae]` (JumpReLU; `log_threshold` in
training checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.features.config import SAEConfig

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SAELENS_VERSION = "6.0.0"  # the config layout we write (metadata block, architecture names)

_ARCH = {"standard": ("relu", False), "topk": ("topk", False), "jumprelu": ("jumprelu", False),
         "transcoder": ("relu", True), "jumprelu_transcoder": ("jumprelu", True)}
# Fields whose non-default values change the maths in ways we do not implement: refused by name.
_MUST_BE = {
    "normalize_activations": ("none", None, False),
    "reshape_activations": ("none", None),
    "hook_head_index": (None,),
    "hook_head_index_out": (None,),
    "finetuning_scaling_factor": (False, None),
    "rescale_acts_by_decoder_norm": (False, None),
    "use_error_term": (False, None),
}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """One dict: the v6 `metadata` (or `meta`) block merged over the top level, pre-6 names renamed."""
    flat = dict(config)
    for block in ("metadata", "meta"):
        if isinstance(config.get(block), dict):
            flat.update({k: v for k, v in config[block].items() if k not in flat or flat[k] is None})
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "activation_fn_str": "activation_fn"}
    for old, new in renames.items():
        if old in flat and new not in flat:
            flat[new] = flat[old]
    return flat


def config_from_saelens(config: dict[str, Any], source: str) -> tuple[SAEConfig, str]:
    """Our `SAEConfig` for an SAELens `cfg.json`, and the architecture name it gave.

    Raises:
        CheckpointError: an architecture or option we do not implement (named with its value), or a
            missing field.
    """
    flat = _flat(config)
    arch = flat.get("architecture", "standard")
    act_fn = flat.get("activation_fn", "relu")
    if arch == "standard" and act_fn == "topk":  # pre-6 TopK SAEs were "standard" + activation_fn topk
        arch = "topk"
        flat.setdefault("k", (flat.get("activation_fn_kwargs") or {}).get("k"))
    if arch not in _ARCH:
        raise CheckpointError(f"{source}: SAELens architecture={arch!r} is not supported; "
                              f"supported: {sorted(_ARCH)}")
    if arch in ("standard", "transcoder") and act_fn not in ("relu", None):
        raise CheckpointError(f"{source}: activation_fn={act_fn!r} is not supported for architecture={arch!r} "
                              "(only relu)")
    bad = [f"{k}={flat[k]!r}" for k, ok in _MUST_BE.items() if k in flat and flat[k] not in ok]
    if bad:
        raise CheckpointError(f"{source}: unsupported SAELens config fields {', '.join(bad)} "
                              f"(supported values: {', '.join(f'{k} in {list(v)}' for k, v in _MUST_BE.items())})")
    kind, transcoder = _ARCH[arch]
    for key in ("d_in", "d_sae", "hook_name") + (("hook_name_out",) if transcoder else ()):
        if flat.get(key) in (None, ""):
            raise CheckpointError(f"{source}: cfg.json has no {key!r} (architecture={arch!r})")
    cfg = SAEConfig(
        d_in=int(flat["d_in"]), d_sae=int(flat["d_sae"]), hook_name=flat["hook_name"], architecture=kind,
        k=flat.get("k") if kind == "topk" else None,
        hook_name_out=flat.get("hook_name_out") if transcoder else None,
        d_out=int(flat.get("d_out") or flat["d_in"]) if transcoder else None,
        topk_relu=True, apply_b_dec_to_input=bool(flat.get("apply_b_dec_to_input", True)) and not transcoder,
        model_name=str(flat.get("model_name") or "custom"),
    )
    return cfg, arch


def state_from_saelens(tensors: dict[str, torch.Tensor], cfg: SAEConfig) -> dict[str, torch.Tensor]:
    """Our state dict from SAELens tensors (a training checkpoint's `log_threshold` becomes `threshold`)."""
    tensors = dict(tensors)
    if cfg.architecture == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    return tensors


def saelens_config(sae) -> dict[str, Any]:
    """The SAELens `cfg.json` for `sae`.

    Raises:
        CheckpointError: a dictionary SAELens cannot express (a TopK transcoder; TopK without the ReLU
            on the kept values).
    """
    c = sae.cfg
    if c.is_transcoder and c.architecture == "topk":
        raise CheckpointError("SAELens has no TopK transcoder architecture; save it with format='scope'")
    if c.architecture == "topk" and not c.topk_relu:
        raise CheckpointError("SAELens's TopK applies a ReLU to the k kept values and this SAE does not "
                              "(topk_relu=False, the tdooms scope convention); save it with format='scope'")
    if c.is_transcoder and c.apply_b_dec_to_input:
        raise CheckpointError("SAELens transcoders never subtract b_dec from the input; this one does "
                              "(apply_b_dec_to_input=True); save it with format='scope'")
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[c.architecture]
    if c.is_transcoder:
        arch = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[arch]
    out: dict[str, Any] = {
        "architecture": arch, "d_in": c.d_in, "d_sae": c.d_sae, "dtype": str(c.dtype).replace("torch.", ""),
        "device": "cpu", "apply_b_dec_to_input": c.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"model_name": c.model_name, "hook_name": c.hook_name, "hook_head_index": None,
                     "hook_layer": _layer(c.hook_name), "sae_lens_version": SAELENS_VERSION,
                     "sae_lens_training_version": SAELENS_VERSION},
    }
    if c.architecture == "topk":
        out["k"] = c.k
    if c.is_transcoder:
        out.update({"d_out": c.d_out, "hook_name_out": c.hook_name_out, "hook_layer_out": _layer(c.hook_name_out),
                    "hook_head_index_out": None})
    return out


def save_saelens(sae, folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `cfg.json` and `sae_weights.safetensors` (state: folded, contiguous tensors)."""
    from safetensors.torch import save_file

    config = saelens_config(sae)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS))
    (folder / CFG).write_text(json.dumps(config, indent=2) + "\n")


def _layer(hook_name: str) -> int:
    parts = hook_name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else 0
