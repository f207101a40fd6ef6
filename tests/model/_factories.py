"""Small model factories, tokenizers and an independent reference forward for the tests of `hooked_bilinear.model`.

Everything here is tiny (d_model 16, two layers) so the whole folder runs in well under a minute
on two CPU cores.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer

SMALL: dict[str, Any] = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=13, n_ctx=10)

NORMS = [None, "LN", "LNPre", "RMS", "RMSPre"]
POSITIONS = ["standard", "rotary", "none"]

# Every architecture switch at least once: each norm x each position, attention-only, gates,
# partial rotary, no biases anywhere, a 0-layer (bigram) model and a 3-layer model.
CONFIGS: list[dict[str, Any]] = (
    [dict(normalization_type=n, positional_embedding_type=p) for n in NORMS for p in POSITIONS]
    + [
        dict(attn_only=True),
        dict(attn_only=True, normalization_type="RMS", positional_embedding_type="rotary"),
        dict(gate="silu"),
        dict(gate="relu", normalization_type="RMS"),
        dict(gate="gelu", positional_embedding_type="rotary"),
        dict(positional_embedding_type="rotary", rotary_dim=4),
        dict(mlp_bias=True, normalization_type="RMSPre"),
        dict(attn_bias=False, unembed_bias=False),
        dict(n_layers=0),
        dict(n_layers=3, n_heads=3, d_head=4),
    ]
)


def config_id(overrides: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def make_cfg(**overrides: Any) -> HookedBilinearConfig:
    """A small float64 config (exact comparisons); `overrides` replace any field."""
    kwargs = dict(SMALL, seed=0, dtype=torch.float64)
    kwargs.update(overrides)
    return HookedBilinearConfig(**kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Perturb every parameter (biases and norm weights too), so no identity holds by accident of zeros."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        p.add_((torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale).to(p))
    return model


def make_model(randomize: bool = True, tokenizer: Any = None, **overrides: Any) -> HookedBilinearTransformer:
    """A small model with all parameters random (default) and float64 unless overridden."""
    model = HookedBilinearTransformer(make_cfg(**overrides), tokenizer=tokenizer)
    return randomize_(model) if randomize else model


def random_tokens(cfg: HookedBilinearConfig, batch: int = 2, pos: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pos = min(cfg.n_ctx, 7) if pos is None else pos
    return torch.randint(0, cfg.d_vocab, (batch, pos), generator=gen)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


def hooked_points(model) -> list[str]:
    """Names of hook points that still hold any hook (TL handles or raw torch hooks)."""
    return [
        name for name, hp in model.hook_dict.items()
        if hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks or hp._backward_hooks
    ]


# ---------------------------------------------------------------------------------------------
# Independent reference forward, written from spec/math.md §0 with nothing but the state dict.


def _ref_norm(x: torch.Tensor, kind: Optional[str], sd: dict, prefix: str, eps: float) -> torch.Tensor:
    if kind is None:
        return x
    if kind in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    if kind in ("LN", "RMS"):
        x = x * sd[f"{prefix}.w"]
    if kind == "LN":
        x = x + sd[f"{prefix}.b"]
    return x


def _ref_rope(x: torch.Tensor, rotary_dim: int, base: float) -> torch.Tensor:
    """Half-split RoPE as a complex rotation: (x_i, x_{i+r/2}) -> (x_i + i x_{i+r/2}) e^{i p θ_i}."""
    n, half = x.shape[1], rotary_dim // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * theta[None, :]  # [pos, half]
    rot = torch.polar(torch.ones_like(angle), angle)[None, :, None, :]  # [1, pos, 1, half]
    z = torch.complex(x[..., :half].double(), x[..., half:rotary_dim].double()) * rot
    out = torch.cat([z.real, z.imag], dim=-1).to(x.dtype)
    return torch.cat([out, x[..., rotary_dim:]], dim=-1)


GATE_REF = {None: lambda t: t, "silu": F.silu, "relu": F.relu, "gelu": F.gelu}


def reference_forward(model: HookedBilinearTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """logits = Nf(x) W_U + b_U with x built block by block from the math, not from our components."""
    cfg = model.cfg
    sd = model.state_dict()
    kind = cfg.normalization_type
    n = tokens.shape[-1]
    x = sd["embed.W_E"][tokens]
    if cfg.positional_embedding_type == "standard":
        x = x + sd["pos_embed.W_pos"][:n]
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        h = _ref_norm(x, kind, sd, p + "ln1", cfg.eps)
        q = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        if cfg.positional_embedding_type == "rotary":
            q, k = _ref_rope(q, cfg.rotary_dim, cfg.rotary_base), _ref_rope(k, cfg.rotary_dim, cfg.rotary_base)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not cfg.attn_only:
            h = _ref_norm(x, kind, sd, p + "ln2", cfg.eps)
            left = GATE_REF[cfg.gate](h @ sd[p + "mlp.W_l"] + sd[p + "mlp.b_l"])
            right = h @ sd[p + "mlp.W_r"] + sd[p + "mlp.b_r"]
            x = x + (left * right) @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    x = _ref_norm(x, kind, sd, "ln_final", cfg.eps)
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


# ---------------------------------------------------------------------------------------------
# Tokenizers built in-process (no network).

WORDS = ["[PAD]", "[EOS]", "[BOS]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "big", "red"]


def make_wordlevel_tokenizer(bos: bool = False):
    """A WordLevel tokenizer over WORDS (13 tokens), whitespace pre-tokenized; optional [BOS] post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[PAD]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    return tok


def make_bpe_tokenizer(vocab_size: int = 40):
    """A byte-level BPE tokenizer trained in-process on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[PAD]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[EOS]"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:0])
    corpus = ["the cat sat on the mat", "a dog ran", "the big red dog sat", "a cat ran on a mat"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok
