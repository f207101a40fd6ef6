"""The single seam to transformer-lens.

Every transformer-lens import in the package goes through this module, so a future TL release
that moves things is fixed here and nowhere else. Pinned to `transformer-lens>=4.3,<5`.
"""

import warnings

with warnings.catch_warnings():
    # TL imports tqdm.auto, which warns "IProgress not found" once, at import, in a Jupyter kernel without
    # ipywidgets: a warning about a widget nobody asked for. Our bars choose the text bar there instead.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule
from transformer_lens.config import TransformerLensConfig
from transformer_lens.head_detector import detect_head
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name, lm_cross_entropy_loss
from transformer_lens.weight_processing import ProcessWeights

import transformer_lens.patching as _patching  # noqa: E402

from hooked_bilinear.progress import tl_tqdm  # noqa: E402

# TL's patching loops call `tqdm.auto.tqdm`: give them our bar (no "IProgress not found" warning in a
# notebook without ipywidgets, and no bar flooding such a notebook's cells). Their signature is tqdm's.
_patching.tqdm = tl_tqdm

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
