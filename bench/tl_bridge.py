"""TransformerLens 4.x `TransformerBridge` next to ours, both as ratios to the plain module in one run.

The bridge is built natively (`transformer_lens.model_bridge.sources.native.boot`, no Hub, no HF
model) with the sizes of bench/forward.py, its gated MLP made bilinear, and the weights of our
HookedBilinearTransformer copied in, so all three models compute the same function on the same
weights (logits checked to 1e-4 before timing).

Two details of TL's native model are changed so the math is identical rather than approximately so:
  * `NativeGatedMLP.act` is replaced by the identity (TL's act_fn table has no identity entry);
  * its `gate`, `in` and `out` Linears are built without biases (Llama convention), so biases are
    registered on them and given b_l, b_r, b_out. The work per call is then the same as ours and
    the plain module's, which add those biases too.
Every weight and bias (norm weights included) is randomised first, so the agreement check is not
passing on zero biases.

Cases (each against the plain module in the same interleaved run): forward with no hooks,
run_with_cache of every hook, two `blocks.{0,1}.hook_resid_post` hooks that return `x * 1.0`; and,
for a like-for-like cache, ours without `attn.hook_result` (the bridge has no per-head outputs, so
its "every hook" caches 8 MiB less here than ours).

    python bench/tl_bridge.py [--quick]
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main, one_thread, ratio_stats, time_interleaved  # noqa: E402
from _plain import PlainBilinearTransformer  # noqa: E402
from forward import TARGETS, build  # noqa: E402

CASES = ("forward (no hooks)", "run_with_cache (all hooks)", "two resid_post hooks")


def randomise(model: nn.Module, seed: int = 1) -> None:
    """Give every bias a random value and every norm weight a random value near 1 (matrices keep their init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                continue
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(noise + 1.0 if leaf == "w" else noise)


def _bias(linear: nn.Linear, value: torch.Tensor) -> None:
    if linear.bias is None:
        linear.register_parameter("bias", nn.Parameter(torch.empty(linear.out_features)))
    linear.bias.data.copy_(value)


def build_bridge(model):
    """A native TransformerBridge with identity-gated (bilinear) MLPs and `model`'s weights."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    c = model.cfg
    cfg = TransformerBridgeConfig(
        d_model=c.d_model, d_head=c.d_head, n_layers=c.n_layers, n_ctx=c.n_ctx, n_heads=c.n_heads,
        d_mlp=c.d_mlp, d_vocab=c.d_vocab, eps=c.eps, normalization_type="LN",
        positional_embedding_type="standard", gated_mlp=True, act_fn="silu", seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = boot(cfg)
    orig = lambda m: m.original_component  # noqa: E731  the native module behind a bridge wrapper
    h, d, e = c.n_heads, c.d_model, c.d_head
    with torch.no_grad():
        orig(bridge.embed).weight.copy_(model.W_E)
        orig(bridge.pos_embed).weight.copy_(model.W_pos)
        for ours, theirs in zip(model.blocks, bridge.blocks):
            for ln_ours, ln_theirs in ((ours.ln1, theirs.ln1), (ours.ln2, theirs.ln2)):
                orig(ln_theirs).weight.copy_(ln_ours.w)
                orig(ln_theirs).bias.copy_(ln_ours.b)
            a = ours.attn
            for W, b, lin in ((a.W_Q, a.b_Q, theirs.attn.q), (a.W_K, a.b_K, theirs.attn.k),
                              (a.W_V, a.b_V, theirs.attn.v)):
                orig(lin).weight.copy_(W.permute(0, 2, 1).reshape(h * e, d))
                orig(lin).bias.copy_(b.reshape(h * e))
            orig(theirs.attn.o).weight.copy_(a.W_O.reshape(h * e, d).T)
            orig(theirs.attn.o).bias.copy_(a.b_O)
            m, native_mlp = ours.mlp, orig(theirs.mlp)
            native_mlp.act = lambda x: x  # bilinear: no activation on the gate branch
            for W, b, lin in ((m.W_l, m.b_l, theirs.mlp.gate), (m.W_r, m.b_r, getattr(theirs.mlp, "in")),
                              (m.W_out, m.b_out, theirs.mlp.out)):
                orig(lin).weight.copy_(W.T)
                _bias(orig(lin), b)
        orig(bridge.ln_final).weight.copy_(model.ln_final.w)
        orig(bridge.ln_final).bias.copy_(model.ln_final.b)
        orig(bridge.unembed).weight.copy_(model.W_U.T)
        _bias(orig(bridge.unembed), model.b_U)
    return bridge.eval()


def build_all():
    """(ours, plain, bridge) with identical weights, and a max-abs logit disagreement check."""
    model, _ = build()
    randomise(model)
    plain = PlainBilinearTransformer(model).eval()
    bridge = build_bridge(model)
    return model, plain, bridge


def run(quick: bool = False) -> list[dict]:
    with one_thread():
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    model, plain, bridge = build_all()
    tokens = torch.randint(0, model.cfg.d_vocab, (8, 128))
    with torch.no_grad():
        ref = plain(tokens)
        err_ours = (model(tokens) - ref).abs().max().item()
        err_tl = (bridge(tokens) - ref).abs().max().item()
        _, tl_cache = bridge.run_with_cache(tokens)
        _, our_cache = model.run_with_cache(tokens)
    assert err_ours < 1e-4, f"our model disagrees with the plain module: max abs error {err_ours}"
    assert err_tl < 1e-4, f"the TL bridge disagrees with the plain module: max abs error {err_tl}"

    def edit(x, hook):
        return x * 1.0

    hooks = [("blocks.0.hook_resid_post", edit), ("blocks.1.hook_resid_post", edit)]
    no_result = lambda name: not name.endswith("attn.hook_result")  # noqa: E731
    fns = {
        "plain": lambda: plain(tokens),
        "ours: forward (no hooks)": lambda: model(tokens),
        "ours: run_with_cache (all hooks)": lambda: model.run_with_cache(tokens),
        "ours: two resid_post hooks": lambda: model.run_with_hooks(tokens, fwd_hooks=hooks),
        "TL bridge: forward (no hooks)": lambda: bridge(tokens),
        "TL bridge: run_with_cache (all hooks)": lambda: bridge.run_with_cache(tokens),
        "TL bridge: two resid_post hooks": lambda: bridge.run_with_hooks(tokens, fwd_hooks=hooks),
        # TL's bridge never materialises per-head attention outputs; ours does when hook_result is hooked.
        "ours: run_with_cache (all but attn.hook_result)": lambda: model.run_with_cache(tokens, names_filter=no_result),
    }
    with torch.no_grad():
        times = time_interleaved(fns, repeats=5 if quick else 31, warmup=3, settle=True,
                                 clock=time.thread_time)
    base = sorted(times["plain"])[len(times["plain"]) // 2]
    rows = []
    for case in CASES:
        tl = ratio_stats(times[f"TL bridge: {case}"], times["plain"])
        ours = ratio_stats(times[f"ours: {case}"], times["plain"])
        rows.append({"bench": "tl_bridge", "case": f"TL bridge: {case}", **tl, "baseline": "plain module",
                     "baseline_s": base, "target": "reference", "met": None,
                     "note": f"{len(tl_cache)} cached tensors" if "cache" in case else f"logit err {err_tl:.1e}"})
        target = TARGETS[case]
        rows.append({"bench": "tl_bridge", "case": f"ours: {case}", **ours, "baseline": "plain module",
                     "baseline_s": base, "target": f"<= {target} and < TL ({tl['ratio']:.3f})",
                     "met": ours["ratio"] <= target and ours["ratio"] < tl["ratio"],
                     "note": f"{len(our_cache)} cached tensors" if "cache" in case else f"logit err {err_ours:.1e}"})
    like = ratio_stats(times["ours: run_with_cache (all but attn.hook_result)"], times["plain"])
    rows.append({"bench": "tl_bridge", "case": "ours: run_with_cache (all but attn.hook_result)", **like,
                 "baseline": "plain module", "baseline_s": base, "target": "info", "met": None,
                 "note": f"what TL caches: no per-head [batch, pos, head, d_model] results; "
                         f"{len(our_cache) - model.cfg.n_layers} cached tensors"})
    return rows


if __name__ == "__main__":
    main(__doc__, run, ["case", "median_s", "ratio", "ratio_min", "ratio_max", "target", "met", "note"])
