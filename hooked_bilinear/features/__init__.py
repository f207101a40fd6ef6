"""Features: sparse dictionaries (SAEs, transcoders) on the hooked model, and what they make readable.

    config.py, sae.py     the one `SAE` type (TopK / ReLU / JumpReLU; SAE or transcoder), hooked
    formats/              SAELens and tdooms-scope files, read and written; bundled dictionaries
    splice.py             attaching dictionaries to a model (`model.add_sae`, `model.saes([...])`)
    buffer.py, trainer.py training TopK SAEs / transcoders on activations streamed from the model
    metrics.py            explained variance, dead fraction, spliced loss increase (the cards)
    interactions.py       weight-only feature circuits: Dᵀ Q_u D, its eigenbasis, top pairs
    lowrank.py            Pearce et al. §5's low-rank statistic over every output feature
    corpus.py, cards.py   max-activating contexts and circuit-tracer feature files for any basis

Heavy libraries (pandas, datasets, pydantic) are imported inside the functions that need them.
"""

from hooked_bilinear.features.config import SAEConfig
from hooked_bilinear.features.formats import bundled_saes, load_sae, save_sae
from hooked_bilinear.features.sae import SAE

__all__ = ["SAE", "SAEConfig", "bundled_saes", "load_sae", "save_sae"]
