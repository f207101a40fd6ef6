"""Argument checks shared by the tensor classes: fail early, name the value and what was expected."""

import torch
from torch import Tensor

from hooked_bilinear.tensor.errors import MaterializeTooLargeError

# Budget for the temporary [chunk, d, m] buffer of chunked contractions (bytes).
CHUNK_BYTES = 64 * 2**20


def check_tensor(name: str, t: object, ndim: int | tuple[int, ...]) -> Tensor:
    """Check that ``t`` is a floating tensor with the allowed number of dimensions."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if t.ndim not in allowed:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but must have {' or '.join(map(str, allowed))} dims")
    if not t.is_floating_point():
        raise TypeError(f"{name} has dtype {t.dtype} but must be floating point")
    return t


def check_dim(name: str, t: Tensor, axis: int, size: int, against: str) -> None:
    """Check ``t.shape[axis] == size``; ``against`` names where ``size`` came from."""
    if t.shape[axis] != size:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but its dim {axis % t.ndim} must be {size} to match {against}"
        )


def check_like(name: str, t: Tensor, ref: Tensor, ref_name: str = "the weights") -> None:
    """Check ``t`` shares dtype and device with ``ref`` (no silent casts)."""
    if t.dtype != ref.dtype or t.device != ref.device:
        raise TypeError(
            f"{name} is {t.dtype} on {t.device} but {ref_name} are {ref.dtype} on {ref.device}; "
            f"convert it first, e.g. {name}.to(dtype={ref.dtype}, device='{ref.device}')"
        )


def check_input(name: str, t: object, last: int, ref: Tensor, what: str) -> Tensor:
    """Check an input vector/batch: a tensor like ``ref`` whose last dim is ``last``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim == 0 or t.shape[-1] != last:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but its last dim must be {what}={last}")
    check_like(name, t, ref)
    return t


def size_guard(what: str, shape: tuple[int, ...], dtype: torch.dtype, max_bytes: int) -> None:
    """Raise MaterializeTooLargeError if a dense tensor of ``shape`` would exceed ``max_bytes``."""
    n = 1
    for s in shape:
        n *= int(s)
    n_bytes = n * torch.empty((), dtype=dtype).element_size()
    if n_bytes > max_bytes:
        raise MaterializeTooLargeError(what, shape, dtype, n_bytes, max_bytes)


def auto_chunk(per_item_elems: int, dtype: torch.dtype, budget: int = CHUNK_BYTES) -> int:
    """Largest chunk whose temporary buffer of ``per_item_elems`` elements per item fits ``budget``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, budget // max(1, per_item_elems * itemsize))
