"""Fixtures for the model tests; the factories themselves live in `_factories.py`."""

import pytest
import torch

from hooked_bilinear import HookedBilinearTransformer

from ._factories import make_model, make_wordlevel_tokenizer, random_tokens


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: intra-op threads only add synchronisation, which costs ~100x per op
    when the CPU is shared (measured 1.7 ms vs 140 ms per forward on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model() -> HookedBilinearTransformer:
    return make_model()


@pytest.fixture
def tokens(model) -> torch.Tensor:
    return random_tokens(model.cfg)


@pytest.fixture
def tokenizer():
    return make_wordlevel_tokenizer()
