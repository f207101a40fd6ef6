"""Public bilinear-attention checkpoints: random fixtures written in each exact layout (torch.save state
dicts, docs/spec/checkpoints.md), loaded and compared with reference forwards written from that spec
on the raw tensors; pickles holding code are refused without running it."""

import json
import math
import pickle
import shutil

import pytest
import torch

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading import load_bilinear_attention

from ._checkpoints import Exploit

TOL = dict(rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ reference forwards (from the spec)
def rope_half(x, base=10000.0):
    """x [..., S, D]: half-split RoPE, inv_freq = base^(-i/(D/2)), rotating (x_i, x_{i+D/2})."""
    S, D = x.shape[-2], x.shape[-1]
    half = D // 2
    inv = 1.0 / base ** (torch.arange(half, dtype=torch.float64) / half)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def vpd_reference(sd, tokens, n_layers):
    lin = lambda x, name: x @ sd[name].T  # noqa: E731  nn.Linear, weight [out, in]
    x = sd["embed.weight"][tokens]
    S = tokens.shape[1]
    keep = torch.ones(S, S).tril().bool()
    for i in range(n_layers):
        p = f"blocks.{i}."
        h = x * sd[p + "norm_attn.scale"]
        q1, q2, k1, k2 = (rope_half(lin(h, p + f"attn.{n}_proj.weight")) for n in ("q1", "q2", "k1", "k2"))
        e = q1.shape[-1]
        a = (q1 @ k1.transpose(-1, -2) / math.sqrt(e)) * (q2 @ k2.transpose(-1, -2) / math.sqrt(e))
        a = a.masked_fill(~keep, 0.0)
        x = x + lin(a @ lin(h, p + "attn.v_proj.weight"), p + "attn.o_proj.weight")
        h = x * sd[p + "norm_mlp.scale"]
        x = x + lin(lin(h, p + "mlp.w_m.weight") * lin(h, p + "mlp.w_n.weight"), p + "mlp.w_proj.weight")
    return lin(x * sd["final_norm.scale"], "unembed.weight")


def melephant_reference(sd, tokens, cfg):
    H, L, scale = cfg["n_head"], cfg["n_layers"], cfg["attn_scale"]
    x = sd["embed.weight"][tokens]
    B, S, d = x.shape
    e = d // H
    keep = torch.ones(S, S).tril().bool()
    for i in range(L):
        p = f"layers.{i}."

        def proj(name):
            y = x @ sd[p + name + ".weight"].T + sd.get(p + name + ".bias", 0)
            return y.view(B, S, H, e).transpose(1, 2)  # [B, H, S, e]

        q1, k1, q2, k2 = (rope_half(proj(n)) for n in ("q1", "k1", "q2", "k2"))
        v = proj("v")
        A = ((q1 @ k1.transpose(-1, -2)) * (q2 @ k2.transpose(-1, -2)) / e**2).masked_fill(~keep, 0.0)
        z = (A @ v).transpose(1, 2).reshape(B, S, d)
        x = x + scale * (z @ sd[p + "o.weight"].T)
    x = x / torch.sqrt(sd["final_norm.running_mean_energy"] + 1e-6)
    return x @ sd["unembed.weight"].T


# ------------------------------------------------------------------ fixtures in the exact layouts
def vpd_state(V=23, d=12, e=6, m=20, L=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.4  # noqa: E731
    sd = {"embed.weight": r(V, d), "final_norm.scale": 1 + r(d) * 0.3, "unembed.weight": r(V, d)}
    for i in range(L):
        p = f"blocks.{i}."
        for n in ("q1", "q2", "k1", "k2", "v"):
            sd[p + f"attn.{n}_proj.weight"] = r(e, d)
        sd[p + "attn.o_proj.weight"] = r(d, e)
        sd[p + "mlp.w_m.weight"], sd[p + "mlp.w_n.weight"], sd[p + "mlp.w_proj.weight"] = r(m, d), r(m, d), r(d, m)
        sd[p + "norm_attn.scale"], sd[p + "norm_mlp.scale"] = 1 + r(d) * 0.3, 1 + r(d) * 0.3
    return sd


MEL_CFG = {"model": {"vocab_size": 19, "d_model": 16, "n_head": 4, "n_layers": 2, "attn_scale": 0.35,
                     "use_bias_qk": True, "attn_type": "bilinear"}}


def melephant_state(cfg=MEL_CFG["model"], seed=0, tracked=100):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    V, d = cfg["vocab_size"], cfg["d_model"]
    sd = {"embed.weight": r(V, d), "unembed.weight": r(V, d),
          "final_norm.running_mean_energy": torch.tensor([2.7]),
          "final_norm.num_batches_tracked": torch.tensor(tracked)}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        for n in ("q1", "k1", "q2", "k2"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = r(d, d), r(d) * 0.3
        sd[p + "v.weight"], sd[p + "o.weight"] = r(d, d), r(d, d)
    return sd


def write_melephant(folder, steps=(0, 150, 2000), seed=0):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(MEL_CFG))
    states = {}
    for k, s in enumerate(steps):
        states[s] = melephant_state(seed=seed + k)
        torch.save({"model_state_dict": states[s], "step": s}, folder / "checkpoints" / f"step_{s:05d}.pt")
    return states


TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3]])


# ------------------------------------------------------------------ tests
def test_vpd_layout_matches_its_reference(tmp_path):
    sd = vpd_state()
    torch.save(sd, tmp_path / "model_final.pt")
    model = load_bilinear_attention(tmp_path)
    cfg = model.cfg
    assert (cfg.attention, cfg.n_heads, cfg.d_head, cfg.normalization_type, cfg.attn_scale) == ("bilinear", 1, 6, "Scale", 6.0)
    assert not model.training
    with torch.no_grad():
        assert torch.allclose(model(TOKENS), vpd_reference(sd, TOKENS, 2), **TOL)
    # the same file passed directly, and in float64
    model64 = load_bilinear_attention(tmp_path / "model_final.pt", dtype=torch.float64, n_ctx=16)
    assert model64.cfg.n_ctx == 16
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        assert torch.allclose(model64(TOKENS), vpd_reference(sd64, TOKENS, 2), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_melephant_layout_matches_its_reference(tmp_path, bias):
    cfg = {**MEL_CFG["model"], "use_bias_qk": bias}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"model": cfg}))
    sd = melephant_state(cfg)
    if not bias:
        sd = {k: v for k, v in sd.items() if not k.endswith(".bias")}
    torch.save({"model_state_dict": sd}, tmp_path / "checkpoints" / "step_00010.pt")
    model = load_bilinear_attention(tmp_path)
    assert model.cfg.attn_only and model.cfg.n_heads == 4 and model.cfg.attn_scale == 16.0
    with torch.no_grad():
        assert torch.allclose(model(TOKENS), melephant_reference(sd, TOKENS, cfg), **TOL)


def test_melephant_step_selection_and_hf_cache(tmp_path):
    states = write_melephant(tmp_path / "repo")
    with torch.no_grad():
        last = load_bilinear_attention(tmp_path / "repo")(TOKENS)
        assert torch.allclose(last, melephant_reference(states[2000], TOKENS, MEL_CFG["model"]), **TOL)
        mid = load_bilinear_attention(tmp_path / "repo", step=150)(TOKENS)
        assert torch.allclose(mid, melephant_reference(states[150], TOKENS, MEL_CFG["model"]), **TOL)
        # a file inside checkpoints/ finds the config.json one folder up
        direct = load_bilinear_attention(tmp_path / "repo" / "checkpoints" / "step_00150.pt")(TOKENS)
        assert torch.equal(direct, mid)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 7 in checkpoints/ .*steps found: \[0, 150, 2000\]"):
        load_bilinear_attention(tmp_path / "repo", step=7)
    # the dataset repo in an HF cache layout, read offline
    cache = tmp_path / "hf"
    snap = cache / "datasets--melephant--2l-bilinear-attn-normalised-v2" / "snapshots" / ("a" * 40)
    shutil.copytree(tmp_path / "repo", snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    with torch.no_grad():
        cached = load_bilinear_attention("melephant/2l-bilinear-attn-normalised-v2", cache_dir=cache)(TOKENS)
    assert torch.equal(cached, last)
    with pytest.raises(CheckpointError, match="never fetched implicitly.*snapshot_download"):
        load_bilinear_attention("melephant/not-downloaded", cache_dir=cache)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("wrap", [False, True])
def test_malicious_pickle_never_runs(tmp_path, wrap):
    marker = tmp_path / "pwned"
    sd = vpd_state()
    sd["blocks.0.attn.q1_proj.weight"] = Exploit(marker)
    blob = {"model_state_dict": sd} if wrap else sd
    (tmp_path / "model_final.pt").write_bytes(pickle.dumps(blob))
    with pytest.raises(CheckpointError, match="refused by torch.load\\(weights_only=True\\).*nothing from it was executed"):
        load_bilinear_attention(tmp_path)
    torch.save(blob, tmp_path / "model_final.pt")  # torch's own zip format, same payload
    with pytest.raises(CheckpointError, match="refused by torch.load"):
        load_bilinear_attention(tmp_path)
    assert not marker.exists()


def test_unknown_layout_and_unmappable_configs(tmp_path):
    torch.save({"transformer.h.0.attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "model_final.pt")
    with pytest.raises(CheckpointError, match="unknown bilinear-attention checkpoint layout.*q1_proj.*layers.0.q1"):
        load_bilinear_attention(tmp_path / "model_final.pt")
    with pytest.raises(CheckpointError, match="layout must be one of"):
        load_bilinear_attention(tmp_path / "model_final.pt", layout="softmax-gpt2")
    folder = tmp_path / "mel"
    write_melephant(folder, steps=(5,))
    (folder / "config.json").write_text(json.dumps({"model": {**MEL_CFG["model"], "attn_type": "softmax"}}))
    with pytest.raises(CheckpointError, match="attn_type='softmax'.*maps only attn_type='bilinear'"):
        load_bilinear_attention(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="needs the repo's config.json"):
        load_bilinear_attention(folder)


def test_bad_tensors_are_named(tmp_path):
    sd = vpd_state()
    sd["blocks.1.mlp.w_n.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"'blocks.1.mlp.w_n.weight' has shape \(3, 3\).*\(20, 12\)"):
        load_bilinear_attention(tmp_path / "a.pt")
    sd = vpd_state()
    sd["blocks.0.extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"unknown tensors \['blocks.0.extra.weight'\]"):
        load_bilinear_attention(tmp_path / "b.pt")
    folder = tmp_path / "fresh"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(MEL_CFG))
    torch.save({"model_state_dict": melephant_state(tracked=0)}, folder / "checkpoints" / "step_00000.pt")
    with pytest.raises(CheckpointError, match="num_batches_tracked is 0.*input-dependent"):
        load_bilinear_attention(folder)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_bilinear_attention(tmp_path / "junk.pt")
