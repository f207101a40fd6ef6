"""`elriggs-attentionlm` (Elriggs/bilinear_atnn_only_2L_Pile): random fixtures written in the exact layout
(docs/spec/checkpoints.md §6.3: flat config.json, raw state dicts `checkpoints/step_NNNNNN.pt`), compared with a
reference forward written from that page on the raw tensors, BatchNorm and LayerNorm applied as written (not
folded); bad configs and tensors are refused by name, and a pickle holding code never runs."""

import json
import pickle
import shutil

import pytest
import torch

from hooked_bilinear import HookedBilinearTransformer, Target
from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading import load_bilinear_attention

from ._checkpoints import Exploit

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 model against the float64 reference (logits of size ~5)
CFG = {"vocab_size": 19, "n_ctx": 32, "d_model": 16, "n_head": 4, "n_layers": 2, "attn_scale": 0.7,
       "rope_base": 10000, "norm_type": "layernorm"}
TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3]])
QK = ("q1", "k1", "q2", "k2")


# ------------------------------------------------------------------ reference forward (from the spec)
def rope(x, base):
    """x [..., S, D]: half-split RoPE, inv_freq = base^(-2i/D), (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    S, D = x.shape[-2], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def reference(sd, tokens, cfg, dtype=torch.float64):
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    H, L = cfg["n_head"], cfg["n_layers"]
    x = sd["embed.weight"][tokens]
    B, S, d = x.shape
    e = d // H
    keep = torch.ones(S, S).tril().bool()
    for i in range(L):
        p = f"layers.{i}."

        def heads(y):
            return y.view(B, S, H, e).transpose(1, 2)  # [B, H, S, e]

        def qk(name):  # nn.Linear, then BatchNorm1d at eval over the d channels, then RoPE
            y = x @ sd[p + name + ".weight"].T + sd.get(p + name + ".bias", 0)
            bn = p + "bn_" + name + "."
            y = (y - sd[bn + "running_mean"]) / torch.sqrt(sd[bn + "running_var"] + 1e-5) * sd[bn + "weight"] + sd[bn + "bias"]
            return rope(heads(y), cfg.get("rope_base", 10000))

        q1, k1, q2, k2 = (qk(n) for n in QK)
        v = heads(x @ sd[p + "v.weight"].T)
        A = ((q1 @ k1.transpose(-1, -2)) * (q2 @ k2.transpose(-1, -2)) / e**2).masked_fill(~keep, 0.0)
        z = (A @ v).transpose(1, 2).reshape(B, S, d)
        x = x + cfg.get("attn_scale", 1.0) * (z @ sd[p + "o.weight"].T)
    kind = cfg.get("norm_type", "layernorm")
    if kind == "layernorm":
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + 1e-5) * sd["final_norm.weight"] + sd["final_norm.bias"]
    elif kind == "rmsnorm":  # nn.RMSNorm(eps=None): the dtype's machine epsilon
        x = x / torch.sqrt((x**2).mean(-1, keepdim=True) + torch.finfo(dtype).eps) * sd["final_norm.weight"]
    return x @ sd["unembed.weight"].T


# ------------------------------------------------------------------ fixtures in the exact layout
def make_state(cfg=CFG, seed=0, bias=False, trained=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.5  # noqa: E731
    V, d = cfg["vocab_size"], cfg["d_model"]
    sd = {"embed.weight": r(V, d), "unembed.weight": r(V, d)}
    if cfg.get("norm_type", "layernorm") in ("layernorm", "rmsnorm"):
        sd["final_norm.weight"] = 1 + r(d) * 0.3
    if cfg.get("norm_type", "layernorm") == "layernorm":
        sd["final_norm.bias"] = r(d) * 0.3
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        for n in QK:
            sd[p + n + ".weight"] = r(d, d)
            if bias:
                sd[p + n + ".bias"] = r(d) * 0.3
            bn = p + "bn_" + n + "."
            if trained:
                sd[bn + "weight"], sd[bn + "bias"] = 1 + r(d) * 0.3, r(d) * 0.3
                sd[bn + "running_mean"], sd[bn + "running_var"] = r(d), 0.2 + torch.rand(d, generator=g) * 2
                sd[bn + "num_batches_tracked"] = torch.tensor(1234)
            else:  # the step-0 checkpoint: BatchNorm1d's initial parameters and buffers
                sd[bn + "weight"], sd[bn + "bias"] = torch.ones(d), torch.zeros(d)
                sd[bn + "running_mean"], sd[bn + "running_var"] = torch.zeros(d), torch.ones(d)
                sd[bn + "num_batches_tracked"] = torch.tensor(0)
        sd[p + "v.weight"], sd[p + "o.weight"] = r(d, d), r(d, d)
    return sd


def write_repo(folder, cfg=CFG, steps=(0, 150, 2000), bias=False):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    states = {}
    for k, s in enumerate(steps):
        states[s] = make_state(cfg, seed=k, bias=bias, trained=s > 0)
        torch.save(states[s], folder / "checkpoints" / f"step_{s:06d}.pt")  # raw state dict, as uploaded
    return states


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("norm_type, bias", [("layernorm", False), ("layernorm", True), ("rmsnorm", False),
                                             ("none", True)])
def test_layout_matches_its_reference(tmp_path, norm_type, bias):
    cfg = {**CFG, "norm_type": norm_type}
    states = write_repo(tmp_path, cfg, steps=(10,), bias=bias)
    model = load_bilinear_attention(tmp_path)
    c = model.cfg
    assert (c.attention, c.attn_only, c.n_heads, c.d_head, c.attn_scale, c.n_ctx) == ("bilinear", True, 4, 4, 16.0, 32)
    assert c.normalization_type == {"layernorm": "LN", "rmsnorm": "RMS", "none": None}[norm_type]
    assert all(b.ln1 is None for b in model.blocks) and not model.training
    with torch.no_grad():
        assert torch.allclose(model(TOKENS).double(), reference(states[10], TOKENS, cfg), **TOL)
    model64 = load_bilinear_attention(tmp_path, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(model64(TOKENS), reference(states[10], TOKENS, cfg), rtol=1e-10, atol=1e-11)


def test_loaded_model_expands_exactly_and_round_trips(tmp_path):
    write_repo(tmp_path / "repo", steps=(10,))
    model = load_bilinear_attention(tmp_path / "repo", dtype=torch.float64)
    paths = model.decompose(TOKENS[:1], level=2, target=Target.logit(4))
    assert paths.check().max_rel_err < 1e-10  # Σ terms against the real forward pass
    model.save_pretrained(str(tmp_path / "native"))  # our own format keeps final_norm_only
    again = HookedBilinearTransformer.from_pretrained(str(tmp_path / "native"))
    assert again.cfg.final_norm_only and all(b.ln1 is None for b in again.blocks)
    with torch.no_grad():
        assert torch.allclose(again(TOKENS), model(TOKENS), rtol=1e-12, atol=1e-12)


def test_step_selection_untrained_batchnorm_and_hf_cache(tmp_path):
    states = write_repo(tmp_path / "repo")
    with torch.no_grad():
        last = load_bilinear_attention(tmp_path / "repo")(TOKENS)
        assert torch.allclose(last.double(), reference(states[2000], TOKENS, CFG), **TOL)
        # step 0: BatchNorm never updated (num_batches_tracked 0) still normalises with its running buffers
        first = load_bilinear_attention(tmp_path / "repo", step=0)(TOKENS)
        assert torch.allclose(first.double(), reference(states[0], TOKENS, CFG), **TOL)
        direct = load_bilinear_attention(tmp_path / "repo" / "checkpoints" / "step_000150.pt")(TOKENS)
        assert torch.allclose(direct.double(), reference(states[150], TOKENS, CFG), **TOL)
    # a model repo in the HF cache layout, read offline
    cache = tmp_path / "hf"
    snap = cache / "models--Elriggs--bilinear_atnn_only_2L_Pile" / "snapshots" / ("e" * 40)
    shutil.copytree(tmp_path / "repo", snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("e" * 40)
    with torch.no_grad():
        cached = load_bilinear_attention("Elriggs/bilinear_atnn_only_2L_Pile", cache_dir=cache)(TOKENS)
    assert torch.equal(cached, last)


def test_compiled_state_dict_in_a_training_checkpoint(tmp_path):
    sd = make_state()
    blob = {"step": 7, "model_state_dict": {"_orig_mod." + k: v for k, v in sd.items()}}  # torch.compile'd model
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    torch.save(blob, tmp_path / "checkpoints" / "step_7.pt")
    with torch.no_grad():
        assert torch.allclose(load_bilinear_attention(tmp_path)(TOKENS).double(), reference(sd, TOKENS, CFG), **TOL)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    write_repo(tmp_path / "repo", steps=(5,))
    sd = make_state()
    sd["layers.0.bn_q1.running_mean"] = Exploit(marker)
    path = tmp_path / "repo" / "checkpoints" / "step_000005.pt"
    path.write_bytes(pickle.dumps(sd))
    with pytest.raises(CheckpointError, match="refused by torch.load\\(weights_only=True\\).*nothing from it was executed"):
        load_bilinear_attention(tmp_path / "repo")
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="refused by torch.load"):
        load_bilinear_attention(tmp_path / "repo")
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    ({"n_layers": 3}, r"config.json n_layers=3 but the tensors have 2 \(layers.\{i\}.q1.weight\)"),
    ({"vocab_size": 20}, r"config.json vocab_size=20 but the tensors have 19 \(embed.weight\)"),
    ({"n_head": 3}, "d_model=16 is not divisible by config.json n_head=3"),
    ({"n_head": None}, "config.json n_head=None, expected a positive int"),
    ({"norm_type": "batchnorm"}, r"norm_type='batchnorm': this loader maps only \('layernorm', 'rmsnorm', 'none'\)"),
    ({"attn_scale": -1}, "attn_scale=-1, expected a positive number"),
    ({"norm_type": "none"}, r"unknown tensors \['final_norm.bias', 'final_norm.weight'\]"),
    ({"norm_type": "rmsnorm"}, r"unknown tensors \['final_norm.bias'\]"),
])
def test_mismatched_config_is_named(tmp_path, change, message):
    write_repo(tmp_path, steps=(5,))
    (tmp_path / "config.json").write_text(json.dumps({**CFG, **change}))
    with pytest.raises(CheckpointError, match=message):
        load_bilinear_attention(tmp_path)


def test_missing_config_unknown_tensors_and_wrong_layout(tmp_path):
    write_repo(tmp_path, steps=(5,))
    ckpt = tmp_path / "checkpoints" / "step_000005.pt"
    (tmp_path / "config.json").write_text(json.dumps({"model": CFG}))
    with pytest.raises(CheckpointError, match="nested 'model' block.*elriggs-attentionlm config.json is flat"):
        load_bilinear_attention(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="needs the repo's config.json"):
        load_bilinear_attention(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    sd = make_state()
    sd["layers.1.prenorm.weight"] = torch.ones(16)  # a per-layer pre-norm this layout does not have
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError, match=r"unknown tensors \['layers.1.prenorm.weight'\]"):
        load_bilinear_attention(tmp_path)
    sd = make_state()
    del sd["final_norm.bias"]
    sd["layers.0.bn_k2.running_var"] = torch.ones(8)
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError, match=r"'layers.0.bn_k2.running_var' has shape \(8,\).*\(16,\)"):
        load_bilinear_attention(tmp_path)
    sd["layers.0.bn_k2.running_var"] = -torch.ones(16)
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError, match="'layers.0.bn_k2.running_var' has negative entries"):
        load_bilinear_attention(tmp_path)
    torch.save(make_state(), ckpt)
    with pytest.raises(CheckpointError, match=r"unknown tensors \['final_norm.bias', 'final_norm.weight', 'layers.0.bn_k1.bias'"):
        load_bilinear_attention(tmp_path, layout="melephant-attentionlm")
    torch.save({"transformer.h.0.attn.qkv.weight": torch.zeros(3, 3)}, ckpt)
    with pytest.raises(CheckpointError, match="unknown bilinear-attention checkpoint layout.*'layers.0.bn_q1.running_mean' "
                                              r"\(elriggs-attentionlm\)"):
        load_bilinear_attention(tmp_path)
