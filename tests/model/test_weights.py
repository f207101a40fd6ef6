"""Stacked weight accessors, FactoredMatrix circuits, TL protocol, accumulated_bias, residual directions."""

import pytest
import torch

from hooked_bilinear._tl import FactoredMatrix

from ._factories import make_model

ATTN = {"W_Q": ("n_heads", "d_model", "d_head"), "W_K": ("n_heads", "d_model", "d_head"),
        "W_V": ("n_heads", "d_model", "d_head"), "W_O": ("n_heads", "d_head", "d_model"),
        "b_Q": ("n_heads", "d_head"), "b_K": ("n_heads", "d_head"), "b_V": ("n_heads", "d_head"),
        "b_O": ("d_model",)}
MLP = {"W_l": ("d_model", "d_mlp"), "W_r": ("d_model", "d_mlp"), "W_out": ("d_mlp", "d_model"),
       "b_l": ("d_mlp",), "b_r": ("d_mlp",), "b_out": ("d_model",)}


@pytest.fixture
def model3():
    return make_model(n_layers=3, n_heads=3, d_head=4, mlp_bias=True)


@pytest.mark.parametrize("part,name", [("attn", n) for n in sorted(ATTN)] + [("mlp", n) for n in sorted(MLP)])
def test_stacked_weights(model3, part, name):
    cfg = model3.cfg
    stacked = getattr(model3, name)
    dims = (ATTN if part == "attn" else MLP)[name]
    assert stacked.shape == (cfg.n_layers, *(getattr(cfg, d) for d in dims))
    for layer, block in enumerate(model3.blocks):
        assert torch.equal(stacked[layer], getattr(getattr(block, part), name))


def test_embedding_weights_are_the_parameters(model3):
    cfg = model3.cfg
    assert model3.W_E is model3.embed.W_E and model3.W_E.shape == (cfg.d_vocab, cfg.d_model)
    assert model3.W_pos is model3.pos_embed.W_pos and model3.W_pos.shape == (cfg.n_ctx, cfg.d_model)
    assert model3.W_U is model3.unembed.W_U and model3.W_U.shape == (cfg.d_model, cfg.d_vocab)
    assert model3.b_U is model3.unembed.b_U and model3.b_U.shape == (cfg.d_vocab,)


def test_tl_gated_mlp_aliases(model3):
    assert torch.equal(model3.W_gate, model3.W_l)
    assert torch.equal(model3.W_in, model3.W_r)
    assert torch.equal(model3.b_in, model3.b_r)


def test_stacked_weights_keep_gradients(model3):
    model3.W_l.sum().backward()
    assert torch.equal(model3.blocks[1].mlp.W_l.grad, torch.ones_like(model3.blocks[1].mlp.W_l))


def test_ov_and_qk_circuits(model3):
    OV, QK = model3.OV, model3.QK
    assert isinstance(OV, FactoredMatrix) and isinstance(QK, FactoredMatrix)
    cfg = model3.cfg
    assert OV.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_model)
    for layer, block in enumerate(model3.blocks):
        for h in range(cfg.n_heads):
            a = block.attn
            assert torch.allclose(OV[layer, h].AB, a.W_V[h] @ a.W_O[h], atol=1e-12)
            assert torch.allclose(QK[layer, h].AB, a.W_Q[h] @ a.W_K[h].T, atol=1e-12)
        assert torch.allclose(block.attn.OV.AB, OV.AB[layer], atol=1e-12)
        assert torch.allclose(block.attn.QK.AB, QK.AB[layer], atol=1e-12)


def test_qk_circuit_gives_the_attention_scores():
    """score[p,s] = x_p W_QK x_sᵀ / √d_head with no biases, no norm, no positions."""
    model = make_model(normalization_type=None, positional_embedding_type="none", attn_bias=False)
    with torch.no_grad():
        for block in model.blocks:
            for name in ("b_Q", "b_K"):
                getattr(block.attn, name).zero_()
    tokens = torch.tensor([[1, 5, 2, 7]])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_attn_scores")
    x = model.W_E[tokens[0]]
    expected = torch.einsum("pd,hde,se->hps", x, model.QK.AB[0], x) / model.cfg.d_head ** 0.5
    tril = torch.ones(4, 4).tril().bool()
    assert torch.allclose(cache["blocks.0.attn.hook_attn_scores"][0][:, tril], expected[:, tril], atol=1e-10)


def test_missing_weights_raise_attribute_error():
    with pytest.raises(AttributeError, match="attn_only"):
        make_model(attn_only=True).W_l
    with pytest.raises(AttributeError, match="rotary"):
        make_model(positional_embedding_type="rotary").W_pos


def test_model_satisfies_the_transformer_lens_protocols(model3):
    from transformer_lens.model_protocol import TransformerLensModel, TransformerLensModelWithWeights

    assert isinstance(model3, TransformerLensModelWithWeights)
    assert isinstance(model3, TransformerLensModel)


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
@pytest.mark.parametrize("mlp_input", [False, True])
@pytest.mark.parametrize("include_mlp_biases", [False, True])
def test_accumulated_bias(model3, layer, mlp_input, include_mlp_biases):
    if mlp_input and layer == 3:
        with pytest.raises(ValueError, match="n_layers"):
            model3.accumulated_bias(layer, mlp_input=True)
        return
    expected = torch.zeros(model3.cfg.d_model, dtype=torch.float64)
    for block in model3.blocks[:layer]:
        expected += block.attn.b_O + (block.mlp.b_out if include_mlp_biases else 0)
    if mlp_input:
        expected += model3.blocks[layer].attn.b_O
    got = model3.accumulated_bias(layer, mlp_input=mlp_input, include_mlp_biases=include_mlp_biases)
    assert torch.allclose(got, expected, atol=1e-14)


def test_accumulated_bias_attn_only():
    model = make_model(attn_only=True)
    assert torch.allclose(model.accumulated_bias(2), model.b_O.sum(0), atol=1e-14)


def _read_direction(model, t):
    """W_U[:, t] scaled by ln_final's weight, when it has one (what the logit reads after the norm's scale)."""
    w = getattr(model.ln_final, "w", None)
    return model.W_U[:, t] if w is None else w * model.W_U[:, t]


def test_tokens_to_residual_directions(model3):
    assert torch.equal(model3.tokens_to_residual_directions(4), _read_direction(model3, 4))
    assert torch.equal(model3.tokens_to_residual_directions(torch.tensor(4)), _read_direction(model3, 4))
    ids = torch.tensor([[1, 2], [3, 4]])
    dirs = model3.tokens_to_residual_directions(ids)
    assert dirs.shape == (2, 2, model3.cfg.d_model)
    assert torch.equal(dirs[1, 0], _read_direction(model3, 3))


def test_tokens_to_residual_directions_from_a_string(tokenizer):
    model = make_model(tokenizer=tokenizer)
    assert torch.equal(model.tokens_to_residual_directions("cat"), _read_direction(model, 4))
    folded = make_model(tokenizer=tokenizer).fold_layer_norm()  # weightless: the plain unembedding column
    assert torch.equal(folded.tokens_to_residual_directions("cat"), folded.W_U[:, 4])


def test_bilinear_refuses_non_bilinear_layers():
    from hooked_bilinear import NotBilinearError

    with pytest.raises(NotBilinearError, match="attention-only"):
        make_model(attn_only=True).bilinear(0)
    with pytest.raises(IndexError, match="out of range"):
        make_model().bilinear(5)
