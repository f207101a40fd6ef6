"""Kept for old imports: the SAE type, its formats and `load_sae` now live in `hooked_bilinear.features`.

`TopKSAE` is the one `SAE` type (TopK, ReLU or JumpReLU; SAE or transcoder), and `load_sae` reads the
tdooms scope repos as before plus SAELens folders and the bundled dictionaries.
"""

from hooked_bilinear.features.config import SAEConfig
from hooked_bilinear.features.formats.load import load_sae
from hooked_bilinear.features.formats.scope import POINTS, hook_name, sae_subfolder
from hooked_bilinear.features.sae import SAE

TopKSAE = SAE
TopKSAEConfig = SAEConfig

__all__ = ["POINTS", "SAE", "SAEConfig", "TopKSAE", "TopKSAEConfig", "hook_name", "load_sae", "sae_subfolder"]
