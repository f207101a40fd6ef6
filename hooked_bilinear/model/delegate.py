"""Methods whose body lives in another package, imported on first use, with that function's real
signature and docstring (so `help(model.decompose)` shows them, not `**kwargs`)."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable


class delegate:
    """A method `model.name(*args)` that calls `module.function(model, *args)`.

    Example:
        >>> class Model:
        ...     decompose = delegate("hooked_bilinear.circuits.decompose", "decompose")
    """

    def __init__(self, module: str, function: str):
        self.module, self.function = module, function

    def _target(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.function)

    def __get__(self, obj: Any, objtype: Any = None) -> Callable:
        fn = self._target()
        if obj is None:
            return fn  # through the class: the model is the first argument, as in the function itself

        @functools.wraps(fn)
        def method(*args: Any, **kwargs: Any) -> Any:
            return fn(obj, *args, **kwargs)

        params = list(inspect.signature(fn).parameters.values())[1:]
        method.__signature__ = inspect.signature(fn).replace(parameters=params)
        return method
