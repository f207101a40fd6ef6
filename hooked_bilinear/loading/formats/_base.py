"""What every format shares: a `TensorReader` over the raw tensors and the `Converted` result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from torch import Tensor

from hooked_bilinear.errors import CheckpointError


class TensorReader:
    """Pops named tensors from a raw checkpoint, checking shapes; leftovers are an error.

    Example:
        >>> r = TensorReader({"w": torch.zeros(2, 3)}, "ckpt")  # doctest: +SKIP
        >>> r.take("w", (2, 3)).shape  # doctest: +SKIP
        >>> r.finish()  # raises if any tensor was not used  # doctest: +SKIP
    """

    def __init__(self, tensors: dict[str, Tensor], source: str, ignore: Iterable[str] = ()):
        """
        Args:
            tensors: the raw checkpoint, name -> tensor.
            source: where it came from, for error messages.
            ignore: regular expressions of names to drop silently (e.g. stray `norm.linear` keys).
        """
        patterns = [re.compile(p) for p in ignore]
        self.tensors = {k: v for k, v in tensors.items() if not any(p.fullmatch(k) for p in patterns)}
        self.source = source

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """Remove and return tensor `name`, which must have `shape`."""
        if name not in self.tensors:
            raise CheckpointError(f"{self.source}: missing tensor {name!r} (expected shape {tuple(shape)})")
        tensor = self.tensors.pop(name)
        if tuple(tensor.shape) != tuple(shape):
            raise CheckpointError(
                f"{self.source}: tensor {name!r} has shape {tuple(tensor.shape)} but the config implies {tuple(shape)}"
            )
        if not tensor.is_floating_point():
            raise CheckpointError(f"{self.source}: tensor {name!r} has dtype {tensor.dtype}, expected a float type")
        return tensor

    def take_optional(self, name: str, shape: tuple[int, ...]) -> Optional[Tensor]:
        """Like `take`, but None when the tensor is absent."""
        return self.take(name, shape) if name in self.tensors else None

    def finish(self) -> None:
        """Raise if any tensor was neither taken nor ignored."""
        if self.tensors:
            names = sorted(self.tensors)
            raise CheckpointError(
                f"{self.source}: unknown tensors {names[:8]}{'...' if len(names) > 8 else ''} "
                f"({len(names)} not used by this format and config)"
            )


@dataclass
class Converted:
    """A checkpoint in our layout, ready for `build_model(model_cls, cfg, state, ...)`.

    Attributes:
        model_cls: HookedBilinearTransformer or HookedBilinearMLP.
        cfg: its config.
        state: its state dict (names and shapes of `model_cls(cfg).state_dict()`).
        tokenizer: tokenizer key (see `loading.tokenizers`), or None for image models.
    """

    model_cls: Any
    cfg: Any
    state: dict[str, Tensor] = field(repr=False)
    tokenizer: Optional[str] = None


def config_value(config: dict[str, Any], key: str, kind: type, source: str, default: Any = ...) -> Any:
    """`config[key]` checked to be a `kind` (ints must be >= 1); missing keys use `default` or raise."""
    if key not in config:
        if default is ...:
            raise CheckpointError(f"{source}: config.json has no {key!r}")
        return default
    value = config[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is int and ok and value < 1:
        ok = False
    if not ok:
        raise CheckpointError(f"{source}: config.json {key}={value!r}, expected a {'positive ' if kind is int else ''}{kind.__name__}")
    return value
