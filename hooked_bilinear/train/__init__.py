"""Training: a small AdamW loop, toy tasks, and the recipes that regenerate the bundled zoo.

Example:
    >>> from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
    >>> from hooked_bilinear.train import train
    >>> from hooked_bilinear.train.tasks import modular_addition
    >>> train_set, test_set = modular_addition(p=7, train_fraction=0.5, seed=0)
    >>> cfg = HookedBilinearConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=8, n_ctx=3, seed=0)
    >>> history = train(HookedBilinearTransformer(cfg), train_set, eval_data=test_set, steps=5, progress=False)
    >>> len(history.train)
    5
"""

from hooked_bilinear.train.config import TrainConfig
from hooked_bilinear.train.loop import TrainHistory, train
from hooked_bilinear.train.losses import default_loss, evaluate, masked_next_token_loss
from hooked_bilinear.train.schedule import lr_at

__all__ = ["TrainConfig", "TrainHistory", "default_loss", "evaluate", "lr_at", "masked_next_token_loss", "train"]
