"""The SAE type: each encoder against a brute-force reference, hook points, config errors."""

import pytest
import torch

from hooked_bilinear import CheckpointError, InputError
from hooked_bilinear.features import SAE, SAEConfig


def _random(arch, **kw):
    cfg = SAEConfig(d_in=8, d_sae=20, hook_name="blocks.0.hook_resid_post", architecture=arch,
                    k=3 if arch == "topk" else None, **kw)
    sae = SAE(cfg, seed=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return sae


def _reference(sae, x):
    c = sae.cfg
    xin = x / (c.normalize or 1)
    pre = (xin - sae.b_dec * c.apply_b_dec_to_input) @ sae.W_enc + sae.b_enc
    acts = torch.zeros_like(pre)
    for row in range(pre.shape[0]):  # one position at a time, the definition read literally
        for f in range(pre.shape[1]):
            v = pre[row, f]
            if c.architecture == "relu":
                acts[row, f] = max(v, 0)
            elif c.architecture == "jumprelu":
                acts[row, f] = v if (v > sae.threshold[f] and v > 0) else 0
            else:
                rank = int((pre[row] > v).sum())
                acts[row, f] = (max(v, 0) if c.topk_relu else v) if rank < c.k else 0
    return acts, (acts @ sae.W_dec + sae.b_dec) * (c.normalize or 1)


@pytest.mark.parametrize("arch,kw", [("topk", {}), ("topk", {"topk_relu": False}), ("relu", {}), ("jumprelu", {}),
                                     ("relu", {"apply_b_dec_to_input": False, "normalize": 2.5})])
def test_encode_decode_match_the_definition(arch, kw):
    sae = _random(arch, **kw)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    acts, recons = _reference(sae, x)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), acts)
        torch.testing.assert_close(sae(x), recons)


def test_hook_points_and_transcoder_shapes():
    cfg = SAEConfig(d_in=8, d_out=5, d_sae=20, k=4, hook_name="a", hook_name_out="b", apply_b_dec_to_input=False)
    sae = SAE(cfg, seed=0)
    assert cfg.is_transcoder and sae.W_enc.shape == (8, 20) and sae.W_dec.shape == (20, 5)
    _, cache = sae.run_with_cache(torch.randn(3, 8))
    assert set(cache.keys()) >= {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons"}
    assert ((cache["hook_sae_acts_post"] != 0).sum(-1) <= 4).all()


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(CheckpointError, match="k=0 must be an integer in"):
        SAEConfig(d_in=4, d_sae=8, k=0, hook_name="h")
    with pytest.raises(CheckpointError, match="architecture='gated'"):
        SAEConfig(d_in=4, d_sae=8, hook_name="h", architecture="gated")
    with pytest.raises(CheckpointError, match="apply_b_dec_to_input=True needs d_out == d_in"):
        SAEConfig(d_in=4, d_out=3, d_sae=8, k=2, hook_name="h", hook_name_out="o")
    sae = SAE(SAEConfig(d_in=4, d_sae=8, k=2, hook_name="h"), seed=0)
    with pytest.raises(InputError, match=r"shape \(3, 5\); expected \[..., d_in=4\]"):
        sae.encode(torch.randn(3, 5))
    with pytest.raises(InputError, match="d_sae=8"):
        sae.decode(torch.randn(3, 4))
