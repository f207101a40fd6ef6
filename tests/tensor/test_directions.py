"""Output-direction helpers and input-space views."""

import pytest
import torch

from hooked_bilinear.tensor import (
    BilinearTensor,
    direction,
    input_space,
    logit_diff_direction,
    read_in_direction,
    stack_directions,
    unembed_direction,
)

from ._helpers import assert_close, make_weights, own_errors, reference_mlp


def test_unembed_direction_reads_the_token_logit():
    w = make_weights(bias=False)
    W_U = torch.randn(7, 20, dtype=torch.float64)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    x = torch.randn(7, dtype=torch.float64)
    u = unembed_direction(W_U, 4)
    assert_close(x @ bt.interaction(u) @ x, (reference_mlp(w, x) @ W_U)[4])
    U = unembed_direction(W_U, torch.tensor([4, 9]))
    assert U.shape == (2, 7)
    assert_close(U[1], W_U[:, 9])
    with pytest.raises(IndexError, match="token=20 is out of range for d_vocab=20"):
        unembed_direction(W_U, 20)


def test_logit_diff_direction():
    w = make_weights(bias=False)
    W_U = torch.randn(7, 5, dtype=torch.float64)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    x = torch.randn(7, dtype=torch.float64)
    logits = reference_mlp(w, x) @ W_U
    u = logit_diff_direction(W_U, 1, 3)
    assert_close(x @ bt.interaction(u) @ x, logits[1] - logits[3])


def test_read_in_of_a_later_layer():
    """Q_u for u = a later layer's W_l column gives that neuron's left pre-activation (from this MLP)."""
    w = make_weights(bias=False)
    later = make_weights(seed=1, bias=False)
    bt = BilinearTensor(w.W_l, w.W_r, w.W_out)
    x = torch.randn(7, dtype=torch.float64)
    u = read_in_direction(later.W_l, 2)
    assert_close(x @ bt.interaction(u) @ x, (reference_mlp(w, x) @ later.W_l)[2])
    assert read_in_direction(later.W_l, torch.tensor([0, 1, 2])).shape == (3, 7)


def test_direction_and_stack():
    v = torch.tensor([3.0, 4.0])
    assert_close(direction(v, 2, normalize=True), torch.tensor([0.6, 0.8]), torch.float32)
    with pytest.raises(ValueError, match="d_out=3"):
        direction(v, 3)
    with pytest.raises(ValueError, match="zero vector"):
        direction(torch.zeros(2), 2, normalize=True)
    assert stack_directions(v, 2 * v).shape == (2, 2)


@own_errors
def test_input_space_view():
    W_E = torch.randn(10, 7, dtype=torch.float64)
    V = torch.randn(7, 3, dtype=torch.float64)
    assert_close(input_space(W_E, V), W_E @ V)
    assert input_space(W_E, V[:, 0]).shape == (10,)
    with pytest.raises(ValueError, match="must be d=7"):
        input_space(W_E, torch.randn(6, 2, dtype=torch.float64))
