"""hooked_bilinear: hooked transformers with bilinear MLPs, their tensor algebra, and exact circuits.

Example:
    >>> from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
    >>> cfg = HookedBilinearConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, d_vocab=100, n_ctx=32)
    >>> model = HookedBilinearTransformer(cfg)
"""

from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError, ConfigError, HookNameError, InputError, NotBilinearError
from hooked_bilinear.hook_point import HookPoint, HookReturnError
from hooked_bilinear.loading import bundled_models
from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer

__version__ = "0.1.0"

__all__ = [
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
    "bundled_models",
]
