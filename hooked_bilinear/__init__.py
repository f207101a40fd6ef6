"""hooked_bilinear: hooked transformers with bilinear MLPs, their tensor algebra, and exact circuits.

Layout (arrows point one way: analysis depends on the model, never the reverse):
    components/, model/   the hooked transformer and the hooked image classifier
    tensor/               the factored bilinear tensor: interaction matrices, eigen, HOSVD, token space
    circuits/             exact path expansion of one forward pass; weight-only token circuits
    loading/              our checkpoint format, the public tdooms/... formats, tokenizers
    features/             SAEs / transcoders on the model, weight-only feature circuits, feature cards
    train/, zoo/          the training loop, toy tasks, and the bundled models

Example:
    >>> from hooked_bilinear import HookedBilinearTransformer
    >>> model = HookedBilinearTransformer.from_pretrained("modadd-113-1l")  # doctest: +SKIP
"""

import importlib
import sys
import types
from typing import Any

# Every public name, and the module that defines it. They are imported on first use (PEP 562), so
# `import hooked_bilinear` costs little: transformer-lens alone takes seconds, and the CLI's `--help`
# and `list` need none of it. `from hooked_bilinear import X` works as before.
_LAZY = {
    "PathDecomposition": "hooked_bilinear.circuits",
    "Target": "hooked_bilinear.circuits",
    "TooManyPathsError": "hooked_bilinear.circuits",
    "decompose": "hooked_bilinear.circuits",
    "direct_circuit": "hooked_bilinear.circuits",
    "expand_lazy": "hooked_bilinear.circuits",
    "mlp_token_tensor": "hooked_bilinear.circuits",
    "ov_circuit": "hooked_bilinear.circuits",
    "qk_circuit": "hooked_bilinear.circuits",
    "HookedBilinearConfig": "hooked_bilinear.config",
    "CheckpointError": "hooked_bilinear.errors",
    "ConfigError": "hooked_bilinear.errors",
    "HookNameError": "hooked_bilinear.errors",
    "InputError": "hooked_bilinear.errors",
    "NotBilinearError": "hooked_bilinear.errors",
    "HookPoint": "hooked_bilinear.hook_point",
    "HookReturnError": "hooked_bilinear.hook_point",
    "bundled_models": "hooked_bilinear.loading",
    "load_pretrained": "hooked_bilinear.loading",
    "list_pretrained": "hooked_bilinear.loading.registry",
    "SAE": "hooked_bilinear.features",
    "SAEConfig": "hooked_bilinear.features",
    "load_sae": "hooked_bilinear.features",
    "TopKSAE": "hooked_bilinear.loading.sae",
    "HookedBilinearMLP": "hooked_bilinear.model.hooked_bilinear_mlp",
    "HookedBilinearMLPConfig": "hooked_bilinear.model.hooked_bilinear_mlp",
    "HookedBilinearTransformer": "hooked_bilinear.model.hooked_bilinear_transformer",
    "BilinearTensor": "hooked_bilinear.tensor",
    "TokenBilinear": "hooked_bilinear.tensor",
    "TrainConfig": "hooked_bilinear.train",
    "TrainHistory": "hooked_bilinear.train",
    "train": "hooked_bilinear.train",
    "list_zoo": "hooked_bilinear.zoo",
    "zoo_table": "hooked_bilinear.zoo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hooked_bilinear' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """`hooked_bilinear.train` is the training function, as it always was, though a subpackage has that name.

    Importing the subpackage makes the import system bind it on this package; the eager `__init__` of old
    rebound the function afterwards. Now imports are lazy, so the binding is redirected here.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType) and hasattr(value, "train"):
            value = value.train
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "BilinearTensor",
    "CheckpointError",
    "ConfigError",
    "HookNameError",
    "HookPoint",
    "HookReturnError",
    "HookedBilinearConfig",
    "HookedBilinearMLP",
    "HookedBilinearMLPConfig",
    "HookedBilinearTransformer",
    "InputError",
    "NotBilinearError",
    "PathDecomposition",
    "SAE",
    "SAEConfig",
    "Target",
    "TokenBilinear",
    "TooManyPathsError",
    "TopKSAE",
    "TrainConfig",
    "TrainHistory",
    "bundled_models",
    "decompose",
    "direct_circuit",
    "expand_lazy",
    "list_pretrained",
    "list_zoo",
    "load_pretrained",
    "load_sae",
    "mlp_token_tensor",
    "ov_circuit",
    "qk_circuit",
    "train",
    "zoo_table",
]
