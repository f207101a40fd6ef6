"""The attention's causal mask and RoPE tables: built at the length used, in the input's dtype, owned by the model.

They used to be built at construction at n_ctx × n_ctx (an n_ctx=100000 config asked for 10 GB) in the
config's dtype (so `.double()` kept float32-rounded RoPE tables), and kept in a module-level cache that
outlived every model (385 MB left behind by an n_ctx=20000 model after `del` and `gc.collect()`).
"""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer

from ._factories import make_model, random_tokens, reference_forward


def test_huge_n_ctx_builds_nothing_until_used():
    model = HookedBilinearTransformer(HookedBilinearConfig(
        n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=16, d_vocab=13, n_ctx=100_000,
        positional_embedding_type="rotary", seed=0))
    attn = model.blocks[0].attn
    assert attn._mask is None and attn._rope is None
    tokens = torch.tensor([[1, 2, 3, 4]])
    logits = model(tokens)
    assert attn._mask.shape == (4, 4) and attn._rope[0].shape == (4, 8)
    small = HookedBilinearTransformer(HookedBilinearConfig(**{**model.cfg.to_dict(), "n_ctx": 4}))
    small.load_state_dict(model.state_dict())
    assert torch.equal(logits, small(tokens))  # the tables' length never changes the numbers


def test_tables_grow_and_stay_exact():
    model = make_model(positional_embedding_type="rotary")
    for n in (2, 3, 7, 10, 5):  # grows 2 -> 4 -> 8 -> 10 (n_ctx), then reuses
        tokens = random_tokens(model.cfg, pos=n, seed=n)
        torch.testing.assert_close(model(tokens), reference_forward(model, tokens), rtol=1e-12, atol=1e-12)
        assert model.blocks[0].attn._mask.shape[0] >= n
    assert model.blocks[0].attn._mask.shape[0] <= model.cfg.n_ctx
    assert model.blocks[0].attn.mask.shape == (10, 10)  # the full-size view, on request


@pytest.mark.parametrize("rotary_dim", [8, 4])
def test_double_recomputes_rope_tables_in_float64(rotary_dim):
    """`.double()` of a float32 rotary model: tables from float64 angles, not float32 values upcast."""
    model = make_model(dtype=torch.float32, positional_embedding_type="rotary", rotary_dim=rotary_dim)
    tokens = random_tokens(model.cfg, pos=10)
    model(tokens)  # builds float32 tables first
    model.double()
    attn = model.blocks[1].attn
    cos, sin = attn.rotary_tables(10, "cpu", torch.float64)
    p = torch.arange(10, dtype=torch.float64)[:, None]
    theta = torch.tensor([10000.0 ** (-2 * i / rotary_dim) for i in range(rotary_dim // 2)], dtype=torch.float64)
    want = (p * theta).repeat(1, 2)
    torch.testing.assert_close(cos, want.cos(), rtol=0, atol=1e-15)
    torch.testing.assert_close(sin, want.sin(), rtol=0, atol=1e-15)
    torch.testing.assert_close(model(tokens), reference_forward(model, tokens), rtol=1e-12, atol=1e-12)
    model.float()
    assert model(tokens).dtype == torch.float32 and attn._rope[0].dtype == torch.float32


def test_constants_are_freed_with_the_model():
    model = make_model(positional_embedding_type="rotary")
    model(random_tokens(model.cfg))
    refs = [weakref.ref(model.blocks[0].attn._mask), weakref.ref(model.blocks[0].attn._rope[0])]
    del model
    gc.collect()
    assert all(r() is None for r in refs)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_rss_after_del_of_a_long_context_model():
    """n_ctx=20000, used at 2048 positions: RSS after `del` + `gc.collect()` is back near where it started."""
    script = textwrap.dedent("""
        import gc, os, torch
        torch.set_num_threads(1)
        from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer
        page = os.sysconf("SC_PAGE_SIZE")
        rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page // 2**20
        torch.ones(8) @ torch.ones(8)
        start = rss()
        model = HookedBilinearTransformer(HookedBilinearConfig(
            n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=16, d_vocab=13, n_ctx=20000,
            positional_embedding_type="rotary", seed=0))
        built = rss()
        with torch.no_grad():
            model(torch.zeros(1, 2048, dtype=torch.long))
        del model
        gc.collect()
        print(start, built, rss())
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    start, built, after = (int(x) for x in out.stdout.split())
    assert built - start < 50, out.stdout  # MB: the 400 MB n_ctx² mask is no longer built at construction
    assert after - start < 100, out.stdout  # MB: nothing kept after the model is gone
    assert math.isfinite(after)
