"""Level 1 agrees with TransformerLens's DLA (`decompose_resid`, `stack_head_results`, `apply_ln_to_stack`)."""

import pytest
import torch

from hooked_bilinear.circuits import decompose

from ._models import folded_copy, make_model, tokens


def tl_logit_terms(model, toks):
    """TL's per-component logit contributions: apply_ln_to_stack, then the (folded) unembedding."""
    _, cache = model.run_with_cache(toks)
    resid, labels = cache.decompose_resid(apply_ln=True, return_labels=True)
    heads, head_labels = cache.stack_head_results(layer=-1, apply_ln=True, return_labels=True)
    w = model.ln_final.w if hasattr(model.ln_final, "w") else torch.ones(model.cfg.d_model, dtype=model.cfg.dtype)
    W_U = w[:, None] * model.W_U  # TL assumes fold_ln; the unfolded weight applies here
    out = {lab: x @ W_U for lab, x in zip(labels, resid)}
    out.update({lab: x @ W_U for lab, x in zip(head_labels, heads)})
    return out


def ours(model, toks):
    d = decompose(model, toks, level=1)
    return {n.label: v for n, v in zip(d.nodes, d.values)}


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_level1_matches_tl_on_processed_weights(norm):
    """After fold_layer_norm + fold_value_biases every level-1 term equals TL's term by term."""
    model = folded_copy(make_model(2, norm))
    toks = tokens()
    tl, me = tl_logit_terms(model, toks), ours(model, toks)
    torch.testing.assert_close(me["tok"], tl["embed"])
    torch.testing.assert_close(me["pos"], tl["pos_embed"])
    for l in range(2):
        for h in range(2):
            torch.testing.assert_close(me[f"head{l}.{h}"], tl[f"L{l}H{h}"])
        mlp = me[f"mlp{l}"] + me.get(f"bout{l}", 0)
        torch.testing.assert_close(mlp, tl[f"{l}_mlp_out"])
        attn = sum(me[f"head{l}.{h}"] for h in range(2)) + me.get(f"bO{l}", 0)
        torch.testing.assert_close(attn, tl[f"{l}_attn_out"])
    # and b_U' closes the sum to the logits, as TL's DLA leaves it out
    total = sum(tl[k] for k in ("embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"))
    torch.testing.assert_close(total + me["bU"], model(toks))


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_level1_matches_tl_on_unfolded_weights(norm):
    """Without processing, TL's hook_result holds b_V W_O and LN biases; the sums still agree."""
    model = make_model(2, norm)
    toks = tokens()
    tl, me = tl_logit_terms(model, toks), ours(model, toks)
    torch.testing.assert_close(me["tok"], tl["embed"])
    torch.testing.assert_close(me["pos"], tl["pos_embed"])
    for l in range(2):
        torch.testing.assert_close(me[f"mlp{l}"] + me[f"bout{l}"], tl[f"{l}_mlp_out"])
        attn = sum(me[f"head{l}.{h}"] for h in range(2)) + me[f"bO{l}"]
        torch.testing.assert_close(attn, tl[f"{l}_attn_out"])
    # individual heads differ by exactly the value bias (b_V + ln1.b W_V) W_O, read out
    _, cache = model.run_with_cache(toks)
    attn = model.blocks[0].attn
    b_V = attn.b_V + torch.einsum("d,hde->he", model.blocks[0].ln1.b, attn.W_V) if norm == "LN" else attn.b_V
    const = torch.einsum("he,hed->hd", b_V, attn.W_O)
    c = cache.apply_ln_to_stack(const[:, None, None, :].expand(2, *toks.shape, -1), layer=2)
    w_U = model.ln_final.w[:, None] * model.W_U
    torch.testing.assert_close(me["head0.0"] + c[0] @ w_U, tl["L0H0"])
    assert (me["head0.0"] - tl["L0H0"]).abs().max() > 1e-3  # the difference is real, not rounding


def test_level1_labels_and_count():
    model = make_model(3, "LN")
    d = decompose(model, tokens(), level=1)
    labels = [n.label for n in d.nodes]
    assert labels[:4] == ["tok", "pos", "head0.0", "head0.1"]
    assert labels[-1] == "bU"
    # tok, pos + per layer (2 heads, bO, mlp, bout) + bU
    assert len(d) == 2 + 3 * 5 + 1
