"""Property-based checks over random valid architectures (hypothesis).

Each property draws a config (norm type, positions, biases, attn_only, gate, sizes, dtype) and
random weights. Budgets are small (`max_examples`) so the whole tests/model folder stays fast.
"""

from __future__ import annotations

import os
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer

from ._factories import GATE_REF, NORMS, POSITIONS, randomize_, reference_forward

# HB_MAX_EXAMPLES=500 for a deep local run; the default keeps the folder under its time budget.
N = int(os.environ.get("HB_MAX_EXAMPLES", "12"))
SETTINGS = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5}


@st.composite
def configs(draw, dtype=None):
    pos = draw(st.sampled_from(POSITIONS))
    d_head = draw(st.sampled_from([2, 4, 6]))
    attn_only = draw(st.booleans())
    return HookedBilinearConfig(
        n_layers=draw(st.integers(0, 3)),
        d_model=draw(st.integers(3, 12)),
        n_heads=draw(st.integers(1, 3)),
        d_head=d_head,
        d_mlp=draw(st.integers(1, 10)),
        d_vocab=draw(st.integers(2, 15)),
        n_ctx=draw(st.integers(2, 9)),
        normalization_type=draw(st.sampled_from(NORMS)),
        positional_embedding_type=pos,
        rotary_dim=draw(st.sampled_from([r for r in (2, 4, 6) if r <= d_head])) if pos == "rotary" else None,
        attn_only=attn_only,
        gate=None if attn_only else draw(st.sampled_from([None, None, "silu", "relu", "gelu"])),
        attn_bias=draw(st.booleans()),
        mlp_bias=draw(st.booleans()),
        unembed_bias=draw(st.booleans()),
        dtype=dtype or draw(st.sampled_from([torch.float32, torch.float64])),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def models_and_tokens(draw, dtype=None, max_batch=3):
    cfg = draw(configs(dtype=dtype))
    model = randomize_(HookedBilinearTransformer(cfg), seed=draw(st.integers(0, 2**16)))
    batch = draw(st.integers(1, max_batch))
    pos = draw(st.integers(1, cfg.n_ctx))
    tokens = torch.tensor(draw(st.lists(st.lists(st.integers(0, cfg.d_vocab - 1), min_size=pos, max_size=pos),
                                        min_size=batch, max_size=batch)))
    return model, tokens


def close(a, b, dtype):
    scale = max(1.0, b.abs().max().item())
    return torch.allclose(a, b, atol=RTOL[dtype] * scale, rtol=RTOL[dtype])


@SETTINGS
@given(models_and_tokens())
def test_forward_equals_the_reference(mt):
    model, tokens = mt
    assert close(model(tokens), reference_forward(model, tokens), model.cfg.dtype)


@SETTINGS
@given(models_and_tokens())
def test_hook_identities(mt):
    model, tokens = mt
    cfg = model.cfg
    counts: dict[str, int] = {}

    def count(tensor, hook):
        counts[hook.name] = counts.get(hook.name, 0) + 1

    with model.hooks(fwd_hooks=[(lambda name: True, count)]):
        logits, cache = model.run_with_cache(tokens)
    assert counts == {name: 1 for name in model.hook_dict}
    assert set(cache.keys()) == set(model.hook_dict)
    ok = lambda a, b: close(a, b, cfg.dtype)  # noqa: E731
    n = tokens.shape[1]
    above = torch.ones(n, n, dtype=torch.bool).triu(1)
    for layer, block in enumerate(model.blocks):
        c = lambda name: cache[f"blocks.{layer}.{name}"]  # noqa: E731
        pattern = c("attn.hook_pattern")
        assert ok(pattern.sum(-1), torch.ones_like(pattern.sum(-1))) and torch.all(pattern[..., above] == 0)
        assert ok(c("attn.hook_result").sum(-2) + block.attn.b_O, c("hook_attn_out"))
        assert ok(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"))
        if cfg.attn_only:
            assert torch.equal(c("hook_resid_post"), c("hook_resid_mid"))
            continue
        assert ok(c("mlp.hook_post"), GATE_REF[cfg.gate](c("mlp.hook_pre")) * c("mlp.hook_pre_linear"))
        assert ok(c("hook_mlp_out"), c("mlp.hook_post") @ block.mlp.W_out + block.mlp.b_out)
        assert ok(c("hook_resid_post"), c("hook_resid_mid") + c("hook_mlp_out"))
    if cfg.n_layers:
        stack = cache.decompose_resid()
        assert ok(stack.sum(0), cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"])


@settings(max_examples=max(1, 2 * N // 3), deadline=None)
@given(models_and_tokens(max_batch=1))
def test_save_load_round_trip(mt):
    model, tokens = mt
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        loaded = HookedBilinearTransformer.from_pretrained(directory)
    assert loaded.cfg == model.cfg
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert torch.equal(loaded(tokens), model(tokens))


@SETTINGS
@given(models_and_tokens(max_batch=3), st.data())
def test_batch_invariance(mt, data):
    """A sequence alone gives the same logits as inside a batch, and as the prefix of a longer sequence."""
    model, tokens = mt
    batched = model(tokens)
    for row in range(tokens.shape[0]):
        assert close(model(tokens[row : row + 1]), batched[row : row + 1], model.cfg.dtype)
    k = data.draw(st.integers(1, tokens.shape[1]))
    assert close(model(tokens[:, :k]), batched[:, :k], model.cfg.dtype)


@SETTINGS
@given(configs(dtype=torch.float64), st.integers(0, 2**16))
def test_float64_and_float32_agree(cfg64, weight_seed):
    model64 = randomize_(HookedBilinearTransformer(cfg64), seed=weight_seed)
    cfg32 = HookedBilinearConfig.from_dict({**cfg64.to_dict(), "dtype": "float32"})
    model32 = HookedBilinearTransformer(cfg32)
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    tokens = torch.randint(0, cfg64.d_vocab, (2, cfg64.n_ctx), generator=torch.Generator().manual_seed(weight_seed))
    out64, out32 = model64(tokens), model32(tokens)
    assert out32.dtype == torch.float32
    # float32 rounding of the weights alone moves the logits by ~1e-7 relative; allow for depth
    assert torch.allclose(out32.double(), out64, atol=2e-4 * max(1.0, out64.abs().max().item()), rtol=1e-4)


@SETTINGS
@given(configs())
def test_same_seed_same_model(cfg):
    a = HookedBilinearTransformer(cfg)
    b = HookedBilinearTransformer(HookedBilinearConfig.from_dict(cfg.to_dict()))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    tokens = torch.arange(min(cfg.n_ctx, cfg.d_vocab))[None]
    assert torch.equal(a(tokens), b(tokens))
    other = HookedBilinearTransformer(HookedBilinearConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed + 1}))
    assert not torch.equal(a.W_E, other.W_E)


@settings(max_examples=max(1, 5 * N // 6), deadline=None)
@given(models_and_tokens(dtype=torch.float64))
def test_process_weights_preserves_log_probs(mt):
    model, tokens = mt
    before = model(tokens).log_softmax(-1)
    model.process_weights()
    assert close(model(tokens).log_softmax(-1), before, torch.float64)
