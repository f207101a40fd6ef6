"""The single seam to transformer-lens.

Every transformer-lens import in the package goes through this module, so a future TL release
that moves things is fixed here and nowhere else. Pinned to `transformer-lens>=4.3,<5`.
"""

from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.config import TransformerLensConfig
from transformer_lens.head_detector import detect_head
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name, lm_cross_entropy_loss
from transformer_lens.weight_processing import ProcessWeights

__all__ = [
    "ActivationCache",
    "FactoredMatrix",
    "HookPoint",
    "HookedRootModule",
    "ProcessWeights",
    "TransformerLensConfig",
    "detect_head",
    "get_act_name",
    "lm_cross_entropy_loss",
]
