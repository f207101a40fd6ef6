"""Analysis results are plain tensors unless gradients are asked for; titles and reprs name tokens and biases."""

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.tensor import BilinearTensor

from ._models import make_model, tokens


@pytest.mark.parametrize("level", [1, 2, "lazy"])
def test_decompose_returns_plain_tensors_with_gradients_on(level):
    model = make_model()
    assert torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
    d = decompose(model, tokens(), level=level, target=Target.logit(3), budget=5)
    assert d.values.grad_fn is None and not d.values.requires_grad and not d.norms.requires_grad
    assert d.check().max_rel_err < 1e-9


def test_tensor_queries_are_plain_unless_grad_is_asked():
    """Even a direction that carries autograd history (model.W_U[:, t]) gives a plain result."""
    model = make_model()
    u = model.W_U[:, 3]
    assert u.requires_grad
    B = model.bilinear(0)
    Q, e = B.interaction(u), B.eig(u)
    assert Q.grad_fn is None and e.values.grad_fn is None and e.vectors.grad_fn is None
    assert B.spectra(model.W_U.T[:3]).values.grad_fn is None and B.mlp(model.W_E[:2]).grad_fn is None
    # the same numbers as the autograd-carrying tensor gives
    Bg = model.bilinear(0, grad=True)
    Qg = Bg.interaction(u)
    torch.testing.assert_close(Q, Qg.detach(), atol=0, rtol=0)
    Qg.sum().backward()
    assert model.blocks[0].mlp.W_l.grad is not None


def test_bilinear_tensor_repr_lists_only_nonzero_biases():
    biased, plain = make_model(biases=True), make_model(biases=False)
    assert "biases=['b_l', 'b_r', 'b_out']" in repr(biased.bilinear(0))
    assert "biases=[]" in repr(plain.bilinear(0))  # the zero b_l, b_r, b_out exist but change nothing
    d = 4
    W = torch.randn(d, 3, dtype=torch.float64)
    assert "biases=['b_r']" in repr(BilinearTensor(W, W, None, torch.zeros(3, dtype=torch.float64),
                                                   torch.ones(3, dtype=torch.float64), None))


def test_titles_and_descriptions_name_the_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(11)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model = make_model()
    model.set_tokenizer(tok)
    d = decompose(model, tokens(), level=1, target=Target.logit_diff(3, 5))
    assert "logit['w3' (3)] - logit['w5' (5)]" in d.description
    fig = d.plot_top(5)
    assert "'w3' (3)" in fig.axes[0].get_title()
    bare = decompose(make_model(), tokens(), level=1, target=Target.logit(3))
    assert "logit[3]" in bare.description  # no tokenizer: ids only
