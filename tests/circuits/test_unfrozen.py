"""decompose on softmax-free bilinear attention freezes nothing (spec graphs.md §3).

References: the logits of a fresh forward pass (`model(tokens)`), and polynomial homogeneity — with
norms off and biases zero, a term of degree k must scale by c^k when the embeddings are scaled by c,
which no frozen-pattern expansion satisfies.
"""

import copy

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear.circuits import Target, decompose, expand_lazy
from hooked_bilinear.errors import InputError

TINY = dict(d_model=8, n_heads=2, d_head=4, d_mlp=6, d_vocab=11, n_ctx=8, dtype=torch.float64, seed=0,
            attention="bilinear")


@torch.no_grad()
def make(n_layers=2, norm=None, pos="rotary", biases=True, scale=None, **kw):
    """Random weights; 0.3 without a normalising norm (a 3-layer degree-5^L polynomial overflows at 0.5)."""
    scale = scale or (0.5 if norm in ("LN", "RMS") else 0.3)
    cfg = HookedBilinearConfig(**{**TINY, **kw}, n_layers=n_layers, normalization_type=norm,
                               positional_embedding_type=pos, mlp_bias=biases)
    model = HookedBilinearTransformer(cfg)
    gen = torch.Generator().manual_seed(3)
    for name, p in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("W_"):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
        elif leaf == "w":
            p.copy_(1 + torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2)
        else:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2 if biases else torch.zeros_like(p))
    return model.eval()


TOKS = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("norm", [None, "Scale", "LN", "RMS"])
@pytest.mark.parametrize("pos", ["rotary", "standard"])
def test_terms_sum_to_the_real_logits(norm, pos):
    for n_layers, biases, attn_only in ((1, True, False), (2, True, False), (2, False, True), (3, False, False)):
        model = make(n_layers, norm, pos, biases, attn_only=attn_only)
        with torch.no_grad():
            logits = model(TOKS)
        assert torch.isfinite(logits).all()
        for level in (1, 2):
            d = decompose(model, TOKS, level=level)
            assert torch.allclose(d.total, logits, rtol=0, atol=1e-10 * logits.abs().max()), (level, d.check())
            t = decompose(model, TOKS, level=level, target=Target.logit_diff(2, 5, pos=3))
            assert abs(t.total - (logits[:, 3, 2] - logits[:, 3, 5])).max() <= 1e-10 * logits.abs().max()
        lazy = decompose(model, TOKS, level="lazy", budget=20, target=Target.logit(4))
        assert (lazy.total - logits[:, -1, 4]).abs().max() <= 1e-10 * logits.abs().max()
        assert lazy.check().max_rel_err <= 1e-10
        frozen = "nothing frozen" if norm in (None, "Scale") else "norm scales frozen"
        assert frozen in lazy.description and "pattern" not in lazy.description.split("(")[0]


def test_lazy_reaches_pattern_terms_of_every_source():
    model = make(2, None, "standard")
    d = decompose(model, TOKS, level="lazy", budget=60, target=Target.logit(4))
    labels = d.to_frame()["label"]
    assert labels.str.contains(r"A\[tok, pos").any()  # a pattern slot split into its sources
    assert labels.str.contains(r"head1\.\d\(A\[.*head0\.").any()  # an earlier head inside a later pattern


def test_terms_are_polynomials_of_the_embeddings():
    """Degree-k terms scale by c^k when W_E and W_pos scale by c (no norm, no bias): nothing is frozen."""
    model = make(2, None, "standard", biases=False)
    scaled = copy.deepcopy(model)
    c = 1.7
    with torch.no_grad():
        scaled.embed.W_E.mul_(c)
        scaled.pos_embed.W_pos.mul_(c)
    t = Target.logit(4)
    a = decompose(model, TOKS, level="lazy", budget=40, target=t).to_frame().set_index("label")
    b = decompose(scaled, TOKS, level="lazy", budget=40, target=t).to_frame().set_index("label")
    leaf = a[a["degree"].notna()]
    assert len(leaf) > 20 and leaf["degree"].max() >= 5
    matched = [label for label in leaf.index if label in b.index]
    assert len(matched) >= 20
    for label, row in leaf.loc[matched].iterrows():
        expected = c ** int(row["degree"]) * row["contribution"]
        assert abs(b.loc[label, "contribution"] - expected) <= 1e-9 * (1 + abs(expected)), label


def test_qk_factors_are_the_bilinear_forms_of_the_scores():
    model = make(1, None, "standard", biases=False)
    _, cache = model.run_with_cache(TOKS)
    x = cache["blocks.0.hook_resid_pre"]
    for i in (1, 2):
        QK = getattr(model, f"QK{i}")
        assert QK.shape == (1, 2, 8, 8)
        expected = torch.einsum("bpd,hde,bqe->bhpq", x, QK.AB[0], x)
        assert torch.allclose(cache[f"blocks.0.attn.hook_scores{i}"], expected, atol=1e-12)


def test_bad_input():
    model = make(2)
    with pytest.raises(InputError, match="level 1, 2 or 'lazy', got 'full'"):
        decompose(model, TOKS, level="full", target=4)
    with pytest.raises(InputError, match="attention='bilinear'.*pattern is itself a polynomial"):
        decompose(model, TOKS, target=Target.score(1, 0, 3))
    d = decompose(model, TOKS, level=2, target=4)
    with pytest.raises(KeyError, match="ordered slots"):
        d.pair_table(0)
    gated = make(1, gate="silu")
    with pytest.raises(Exception, match="gate='silu'"):
        decompose(gated, TOKS)


def test_expand_lazy_steps_stay_exact():
    model = make(2, "Scale", "rotary")
    with torch.no_grad():
        logit = model(TOKS)[:, -1, 4]
    lazy = expand_lazy(model, TOKS, target=Target.logit(4))
    for _ in range(8):
        lazy.step()
        d = lazy.decomposition()
        assert (d.total - logit).abs().max() <= 1e-10 * logit.abs().max() and "nothing frozen" in d.description
