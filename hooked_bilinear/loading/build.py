"""Build a model straight from a checked state dict, without paying for random initialisation.

Every loader (our format and the public ones) ends here: construct the model on the meta device
(`skip_init`), check the tensors against it by name and shape, assign them
(`load_state_dict(assign=True)`, so the checkpoint's tensors become the parameters without a copy),
then rebuild any non-persistent buffers on the real device (the attention's causal mask and RoPE
tables are not buffers: they are built lazily at the length used, see `components/attention.py`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.model.init import skip_init

NONFINITE = ("warn", "raise", "ignore")


def _dense_flat(tensor: Tensor) -> Tensor:
    """The elements of a permuted dense tensor (e.g. a transposed view) in memory order, as 1-D.

    Loaded weights are transposed views of the checkpoint's tensors; reducing them in their
    logical order walks memory with large strides (and page faults, when memory-mapped)."""
    expected = 1
    for dim in sorted(range(tensor.dim()), key=tensor.stride):
        if tensor.size(dim) != 1 and tensor.stride(dim) != expected:
            return tensor  # overlapping or gapped: reduce it as it is
        expected *= tensor.size(dim)
    return tensor.as_strided((tensor.numel(),), (1,))


def _all_finite(tensor: Tensor) -> bool:
    # One reduction instead of a full boolean mask: a NaN/inf anywhere makes the sum non-finite;
    # a finite tensor whose sum overflows falls through to the exact check.
    if bool(torch.isfinite(_dense_flat(tensor).sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def check_state_dict(model, state: dict[str, Tensor], source: str, nonfinite: str = "warn") -> None:
    """Compare `state` with `model.state_dict()`: missing, unexpected and mis-shaped tensors are named.

    Args:
        model: the module the tensors are meant for (may live on the meta device).
        state: tensor name -> tensor, in the model's own naming and layout.
        source: where the tensors came from, for error messages.
        nonfinite: "warn", "raise" or "ignore" when a tensor holds NaN or inf.

    Raises:
        CheckpointError: a missing, unexpected, mis-shaped or non-float tensor (or a NaN with nonfinite="raise").
    """
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: tensors do not match the config: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(tensor.shape)} but the config expects "
                f"{tuple(expected[name].shape)}"
            )
        if expected[name].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(
                f"{source}: tensor {name!r} has dtype {tensor.dtype} but it is a float parameter (the model "
                f"uses {expected[name].dtype}); integer or bool weights are refused, not cast"
            )
        if nonfinite != "ignore" and tensor.is_floating_point() and not _all_finite(tensor):
            msg = f"{source}: tensor {name!r} contains NaN or inf values"
            if nonfinite == "raise":
                raise CheckpointError(msg)
            warnings.warn(msg, stacklevel=3)


def build_model(model_cls: Callable[[Any], Any], cfg: Any, state: dict[str, Tensor], source: str,
                nonfinite: str = "warn"):
    """`model_cls(cfg)` holding exactly the tensors of `state` (cast to cfg.dtype, moved to cfg.device).

    Args:
        model_cls: HookedBilinearTransformer or HookedBilinearMLP.
        cfg: its config; `cfg.device` and `cfg.dtype` decide where the tensors end up.
        state: the model's state dict (names and shapes of `model_cls(cfg).state_dict()`); views of
            the checkpoint's tensors are fine, they become the parameters without a copy.
        source: where the tensors came from, for error messages.
        nonfinite: "warn", "raise" or "ignore" when a tensor holds NaN or inf.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped tensors, named.
    """
    with skip_init():
        model = model_cls(cfg)
    check_state_dict(model, state, source, nonfinite=nonfinite)
    device = torch.device(cfg.device)
    state = {
        k: v.to(device=device, dtype=cfg.dtype if v.is_floating_point() else v.dtype) for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # the constructor built them on the CPU: move only if needed
        if hasattr(module, "init_buffers") and any(b.device != device for b in module.buffers(recurse=False)):
            module.init_buffers(device)
    return model
