"""Fixtures for the job tests: one intra-op thread (as torchrun gives each rank), tiny bundled model."""

import pytest
import torch

from tests._shared import one_thread  # noqa: F401  (autouse)

MODEL = "induction-2l"  # bundled: 2 layers, d_model 64, d_vocab 64 → 8 units of 16 directions


@pytest.fixture(scope="module")
def model():
    from hooked_bilinear import HookedBilinearTransformer

    return HookedBilinearTransformer.from_pretrained(MODEL)


def expected_top(model, layer: int, token: int, k: int) -> torch.Tensor:
    """Top-k |λ| of Q_u for u = W_U[:, token], by float64 dense eigh of Q_u formed from the weights."""
    mlp = model.blocks[layer].mlp
    W_l, W_r, W_out = (w.detach().double() for w in (mlp.W_l, mlp.W_r, mlp.W_out))
    D = W_out @ model.W_U[:, token].detach().double()
    A = (W_l * D) @ W_r.T
    ev = torch.linalg.eigvalsh(0.5 * (A + A.T))
    return ev[ev.abs().argsort(descending=True)[:k]]
