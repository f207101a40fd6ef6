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

from hooked_bilinear.circuits import (
    PathDecomposition,
    Target,
    TooManyPathsError,
    decompose,
    direct_circuit,
    expand_lazy,
    mlp_token_tensor,
    ov_circuit,
    qk_circuit,
)
from hooked_bilinear.config import HookedBilinearConfig
from hooked_bilinear.errors import CheckpointError, ConfigError, HookNameError, InputError, NotBilinearError
from hooked_bilinear.hook_point import HookPoint, HookReturnError
from hooked_bilinear.loading import bundled_models, load_pretrained
from hooked_bilinear.loading.registry import list_pretrained
from hooked_bilinear.features import SAE, SAEConfig, load_sae
from hooked_bilinear.loading.sae import TopKSAE
from hooked_bilinear.model.hooked_bilinear_mlp import HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.model.hooked_bilinear_transformer import HookedBilinearTransformer
from hooked_bilinear.tensor import BilinearTensor, TokenBilinear
from hooked_bilinear.train import TrainConfig, TrainHistory, train
from hooked_bilinear.zoo import list_zoo, zoo_table

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
