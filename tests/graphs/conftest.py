"""Graph tests run tiny models on one intra-op thread (a 2-thread pool only adds synchronisation at d_model 8)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
