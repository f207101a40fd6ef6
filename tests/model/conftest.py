"""Fixtures for the model tests; the factories themselves live in `_factories.py`."""

import pytest
import torch

from hooked_bilinear import HookedBilinearTransformer

from tests._shared import one_thread  # noqa: F401  (autouse)

from ._factories import make_model, make_wordlevel_tokenizer, random_tokens




@pytest.fixture
def model() -> HookedBilinearTransformer:
    return make_model()


@pytest.fixture
def tokens(model) -> torch.Tensor:
    return random_tokens(model.cfg)


@pytest.fixture
def tokenizer():
    return make_wordlevel_tokenizer()
