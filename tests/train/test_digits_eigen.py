"""The eigenvector measurements of `train.digits_eigen`, each against a brute-force computation."""

from itertools import product

import pytest
import torch

from hooked_bilinear import HookedBilinearMLP, HookedBilinearMLPConfig
from hooked_bilinear.train.digits_eigen import cross_seed_cosine, roughness, top_eigenvectors, topk_accuracy


def model(seed=0, d=8):
    cfg = HookedBilinearMLPConfig(d_input=16, d_hidden=d, n_classes=3, input_shape=(4, 4), seed=seed,
                                  dtype=torch.float64)
    return HookedBilinearMLP(cfg).requires_grad_(False)


def brute_force_Q(m, c):
    """Q_c[i, j] = ½ Σ_k W_U[k, c] (W_l[i, k] W_r[j, k] + W_r[i, k] W_l[j, k]), entry by entry."""
    W_l, W_r, w = m.blocks[0].mlp.W_l, m.blocks[0].mlp.W_r, m.W_U[:, c]
    d = W_l.shape[0]
    Q = torch.zeros(d, d, dtype=W_l.dtype)
    for i, j in product(range(d), range(d)):
        Q[i, j] = 0.5 * sum(w[k] * (W_l[i, k] * W_r[j, k] + W_r[i, k] * W_l[j, k]) for k in range(W_l.shape[1]))
    return Q


def test_top_eigenvectors_match_a_brute_force_eigendecomposition():
    m = model()
    for sign in (1, -1):
        got = top_eigenvectors(m, sign=sign)
        assert got.shape == (3, 16)
        for c in range(3):
            values, vectors = torch.linalg.eigh(brute_force_Q(m, c))
            i = int(values.argmax()) if sign > 0 else int(values.argmin())
            expected = m.W_E @ vectors[:, i]
            expected = expected / expected.norm()
            assert float((got[c] @ expected).abs()) == pytest.approx(1.0, abs=1e-9)
            assert float(got[c][got[c].abs().argmax()]) > 0  # the sign convention
    with pytest.raises(ValueError, match="sign"):
        top_eigenvectors(m, sign=0)


def test_cross_seed_cosine_ignores_sign_and_scale():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[-3.0, 0.0], [1.0, 1.0]])
    got = cross_seed_cosine([a, b])
    assert torch.allclose(got, torch.tensor([1.0, 2**-0.5]))
    three = cross_seed_cosine([a, b, a])  # pairs (a,b), (a,a), (b,a)
    assert torch.allclose(three, torch.tensor([1.0, (2 * 2**-0.5 + 1) / 3]))
    with pytest.raises(ValueError, match="two"):
        cross_seed_cosine([a])


def test_roughness_of_known_images():
    assert float(roughness(torch.ones(8, 8))) == 0.0
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])
    assert float(roughness(checker)) == pytest.approx(4 * 112 / 64)  # 112 neighbour pairs, each (±2)²
    ramp = torch.arange(8.0).repeat(8, 1)  # only horizontal steps of 1: 56 pairs
    assert float(roughness(ramp)) == pytest.approx(56 / float(ramp.square().sum()))
    assert roughness(torch.stack([checker, ramp])).shape == (2,)
    with pytest.raises(ValueError, match="images"):
        roughness(torch.ones(8))


def test_topk_accuracy_with_all_eigenvectors_is_the_model_accuracy():
    m = model()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(50, 16, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (50,), generator=gen)
    data = {"images": images, "labels": labels}
    acc = topk_accuracy(m, data, [8, 1])
    assert acc[8] == pytest.approx(float((m(images).argmax(-1) == labels).double().mean()))
    # k = 1 by brute force: logit c = λ_top (v_top · h)² + b_c with the top-|λ| pair of Q_c
    h = images @ m.W_E
    logits = []
    for c in range(3):
        values, vectors = torch.linalg.eigh(brute_force_Q(m, c))
        i = int(values.abs().argmax())
        logits.append(values[i] * (h @ vectors[:, i]) ** 2 + m.b_U[c])
    expected = float((torch.stack(logits, -1).argmax(-1) == labels).double().mean())
    assert acc[1] == pytest.approx(expected)
