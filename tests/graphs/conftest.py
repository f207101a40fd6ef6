"""Graph viewer tests run their tiny models on one intra-op thread (see tests/circuits/conftest.py)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
