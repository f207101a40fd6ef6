"""Fixtures for the features tests: one torch thread, no network, a tiny RMS model with a tokenizer-free vocab."""

import pytest
import torch

from tests._shared import no_network, one_thread  # noqa: F401  (autouse)

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer




@pytest.fixture(scope="module")
def tiny():
    cfg = HookedBilinearConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=12,
                               normalization_type="RMS", seed=0)
    return HookedBilinearTransformer(cfg)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50, (24, 12), generator=torch.Generator().manual_seed(1))
