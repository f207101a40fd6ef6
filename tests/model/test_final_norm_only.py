"""`final_norm_only=True`: no ln1/ln2 in the blocks, `normalization_type` on ln_final only (the layout of
attention-only checkpoints with one LayerNorm before the unembedding, e.g. Elriggs/bilinear_atnn_only_2L_Pile).

The reference forward is written out by hand from the definition (embed, blocks reading the raw residual,
LayerNorm, unembed), and the exact expansions must still sum to the real logits."""

import copy

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, Target
from hooked_bilinear.config import ConfigError

TOKENS = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 0, 2, 2, 9, 1]])


def _model(attention="bilinear", norm="LN", attn_only=True):
    cfg = HookedBilinearConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=11, n_ctx=8, d_mlp=12,
                               attn_only=attn_only, attention=attention, normalization_type=norm, final_norm_only=True,
                               positional_embedding_type="rotary", seed=0, dtype=torch.float64)
    model = HookedBilinearTransformer(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model.eval()


def test_blocks_have_no_norms_and_the_forward_is_the_definition():
    model = _model()
    assert all(b.ln1 is None for b in model.blocks)
    assert "blocks.0.ln1.hook_scale" not in model.hook_dict and "ln_final.hook_scale" in model.hook_dict
    with torch.no_grad():
        logits, cache = model.run_with_cache(TOKENS)
        # blocks read the raw residual: the attention input is resid_pre itself
        x = model.W_E[TOKENS]
        for l, block in enumerate(model.blocks):
            assert torch.allclose(cache[f"blocks.{l}.hook_resid_pre"], x, rtol=1e-12, atol=1e-12)
            x = x + block.attn(x)
        ln = model.ln_final
        ref = ((x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + model.cfg.eps))
        ref = (ref * ln.w + ln.b) @ model.W_U + model.b_U
    assert torch.allclose(logits, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention, attn_only", [("bilinear", True), ("softmax", True), ("softmax", False)])
def test_expansions_and_folding_stay_exact(attention, attn_only):
    model = _model(attention, attn_only=attn_only)
    with torch.no_grad():
        logits = model(TOKENS)
    paths = model.decompose(TOKENS[:1], level=2, target=Target.logit(3))
    assert paths.check().max_rel_err < 1e-10  # Σ terms against the real forward pass (float64)
    folded = copy.deepcopy(model).fold_layer_norm()
    assert folded.cfg.normalization_type == "LNPre" and all(b.ln1 is None for b in folded.blocks)
    with torch.no_grad():
        assert torch.allclose(folded(TOKENS), logits, rtol=1e-10, atol=1e-12)


def test_bad_settings_are_refused_and_change_nothing():
    with pytest.raises(ConfigError, match="final_norm_only=True needs a normalization_type"):
        HookedBilinearConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=4, attn_only=True,
                             normalization_type=None, final_norm_only=True)
    with pytest.raises(ConfigError, match="final_norm_only must be True or False, got 'yes'"):
        HookedBilinearConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=4, attn_only=True,
                             final_norm_only="yes")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="ln_final only .*uncentred"):
        model.center_writing_weights()
    with pytest.raises(ConfigError, match="final_norm_only cannot change on a built model"):
        model.cfg.final_norm_only = False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("attention", ["bilinear", "softmax"])
def test_attribution_graphs_stay_exact(attention):
    from hooked_bilinear.graphs import attribute

    model = _model(attention, attn_only=False)  # MLPs too: ln2 is absent as well
    graph = attribute(model, TOKENS[0], targets=3, max_nodes=32)
    check = graph.check()  # every row's incoming edges against its value in the real forward pass
    assert check.max_rel_err < 1e-10, check
