"""Our HookPoint: TransformerLens's, plus a check that a hook returns a tensor of the same shape, dtype and device.

It is a subclass, so TL's tools (which test `isinstance(module, HookPoint)`) accept it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from torch import Tensor

from hooked_bilinear._tl import HookPoint as _TLHookPoint
from hooked_bilinear.errors import InputError


class HookReturnError(InputError):
    """A hook returned something other than None or a tensor shaped like its input."""


def _checked(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(tensor: Any, *, hook: Any) -> Any:
        out = fn(tensor, hook=hook)
        if out is None or not isinstance(tensor, Tensor):
            return out
        if not isinstance(out, Tensor):
            raise HookReturnError(
                f"hook {getattr(fn, '__name__', fn)!r} at {hook.name!r} returned {type(out).__name__}; "
                f"return None or a Tensor of shape {tuple(tensor.shape)}"
            )
        if out.device != tensor.device:
            raise HookReturnError(
                f"hook {getattr(fn, '__name__', fn)!r} at {hook.name!r} returned a tensor on device {out.device}; "
                f"expected {tensor.device}, where its input (and the model) is"
            )
        if out.shape != tensor.shape or out.dtype != tensor.dtype:
            raise HookReturnError(
                f"hook {getattr(fn, '__name__', fn)!r} at {hook.name!r} returned shape {tuple(out.shape)} "
                f"dtype {out.dtype}; expected shape {tuple(tensor.shape)} dtype {tensor.dtype}"
            )
        return out

    return wrapper


class HookPoint(_TLHookPoint):
    """An identity module where hooks attach; forward hooks are checked for their return shape."""

    def add_hook(self, hook: Callable, dir: str = "fwd", is_permanent: bool = False, level: Optional[int] = None,
                 prepend: bool = False, alias_names: Optional[list[str]] = None):
        if dir == "fwd":
            hook = _checked(hook)
        return super().add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend,
                                alias_names=alias_names)
