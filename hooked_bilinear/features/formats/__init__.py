"""On-disk formats of sparse dictionaries: SAELens (`cfg.json` + `sae_weights.safetensors`) and the
tdooms `{model}-scope` layout (`config.json` + `model.safetensors`). Both are read and written."""

from hooked_bilinear.features.formats.load import bundled_saes, load_sae, save_sae

__all__ = ["bundled_saes", "load_sae", "save_sae"]
