"""Weight processing, each step an explicit opt-in that leaves the logits unchanged (spec §3).

`fold_layer_norm` is exact for LayerNorm with biases: the LN bias becomes biases on *both*
bilinear branches (`b_l += b_ln W_l`, `b_r += b_ln W_r`), which a bilinear MLP needs.
"""

from __future__ import annotations

import torch

from hooked_bilinear.components.norms import LayerNormPre, RMSNormPre
from hooked_bilinear.config import ConfigError

_PRE = {"LN": "LNPre", "RMS": "RMSPre", "LNPre": "LNPre", "RMSPre": "RMSPre"}


def _fold_into(norm, weights_and_biases) -> None:
    """Fold `norm.w` (and `norm.b`) into matrices whose input axis is -2 (d_model), in place."""
    w = norm.w
    b = getattr(norm, "b", None)
    for W, bias in weights_and_biases:
        if b is not None:
            bias.add_(torch.matmul(b, W))
        W.mul_(w[:, None])


def _attention_inputs(attn, cfg) -> list:
    """(W, b) of every projection reading ln1's output: Q, K, V (softmax) or Q1, K1, Q2, K2, V (bilinear)."""
    names = ("Q", "K", "V") if getattr(cfg, "attention", "softmax") == "softmax" else ("Q1", "K1", "Q2", "K2", "V")
    return [(getattr(attn, f"W_{n}"), getattr(attn, f"b_{n}")) for n in names]


@torch.no_grad()
def fold_layer_norm(model):
    """Fold the norm weights into W_Q/W_K/W_V (ln1), W_l/W_r (ln2) and W_U (ln_final).

    Afterwards the norms are weightless (LN -> LNPre, RMS -> RMSPre); hook names are unchanged.
    """
    cfg = model.cfg
    if cfg.normalization_type not in ("LN", "RMS", "Scale"):
        return model  # nothing to fold: no norm, or already weightless
    if cfg.normalization_type == "Scale":  # checked before any weight changes
        hooked = [name for name, hp in model.hook_dict.items()
                  if (".ln" in name or name.startswith("ln_final")) and (hp.fwd_hooks or hp.bwd_hooks)]
        if hooked:  # their hook points disappear with the norms: refuse rather than drop the hooks silently
            raise ConfigError(f"fold_layer_norm removes a Scale model's norms, and with them the hook points "
                              f"{hooked}, which hold hooks; remove them first (model.reset_hooks(including_permanent=True))")
    for block in model.blocks:
        if block.ln1 is None:  # final_norm_only: only ln_final has weights
            continue
        attn = block.attn
        for W, b in _attention_inputs(attn, cfg):
            if hasattr(block.ln1, "b"):
                b.add_(torch.einsum("d,hde->he", block.ln1.b, W))
            W.mul_(block.ln1.w[None, :, None])
        if not cfg.attn_only:
            _fold_into(block.ln2, [(block.mlp.W_l, block.mlp.b_l), (block.mlp.W_r, block.mlp.b_r)])
    _fold_into(model.ln_final, [(model.unembed.W_U, model.unembed.b_U)])
    if cfg.normalization_type == "Scale":  # x * w folded away: no norm is left at all
        with cfg.rebuilding():
            cfg.normalization_type = None
            cfg.layer_norm_folding = True
        for block in model.blocks:
            block.ln1 = None
            if not cfg.attn_only:
                block.ln2 = None
        model.ln_final = None
        model.setup()
        return model
    with cfg.rebuilding():  # the weights change to match below
        new_type = _PRE[cfg.normalization_type]
        if cfg.normalization_type == "LN":
            # The LN bias now lives in these biases: mark them as real (trainable) biases.
            cfg.attn_bias = cfg.unembed_bias = True
            if not cfg.attn_only:
                cfg.mlp_bias = True
            for name, p in model.named_parameters():
                if name.rsplit(".", 1)[-1].startswith("b_"):
                    p.requires_grad_(True)
        cfg.normalization_type = new_type
        cfg.layer_norm_folding = True
    pre_cls = LayerNormPre if new_type == "LNPre" else RMSNormPre
    for block in model.blocks:
        if block.ln1 is None:  # final_norm_only
            continue
        block.ln1 = _weightless(block.ln1, pre_cls, cfg)
        if not cfg.attn_only:
            block.ln2 = _weightless(block.ln2, pre_cls, cfg)
    model.ln_final = _weightless(model.ln_final, pre_cls, cfg)
    model.to(cfg.device)
    model.setup()
    return model


def _weightless(norm, pre_cls, cfg):
    """The weightless norm that replaces `norm`, in its train/eval mode and with its own hook points.

    Moving the HookPoint modules (not copying) keeps every hook attached to them, permanent ones
    included, with their handles and context levels: folding changes weights, never the hooks.
    """
    new = pre_cls(cfg)
    new.hook_scale = norm.hook_scale
    new.hook_normalized = norm.hook_normalized
    new.train(norm.training)
    return new


@torch.no_grad()
def center_writing_weights(model):
    """Subtract the d_model-mean from W_E, W_pos, W_O, b_O, W_out, b_out. Exact only under LayerNorm."""
    if model.cfg.normalization_type not in ("LN", "LNPre") or model.cfg.final_norm_only:
        raise ConfigError(
            f"center_writing_weights is exact only for LayerNorm models (it relies on LN re-centring); "
            f"this model has normalization_type={model.cfg.normalization_type!r}"
            + (" on ln_final only (final_norm_only=True): the blocks read the residual uncentred"
               if model.cfg.final_norm_only else "")
        )
    tensors = [model.embed.W_E]
    if model.pos_embed is not None:
        tensors.append(model.pos_embed.W_pos)
    for block in model.blocks:
        tensors += [block.attn.W_O, block.attn.b_O]
        if not model.cfg.attn_only:
            tensors += [block.mlp.W_out, block.mlp.b_out]
    for t in tensors:
        t.sub_(t.mean(-1, keepdim=True))
    return model


@torch.no_grad()
def center_unembed(model):
    """Subtract the vocab-mean of W_U and b_U; log-probs are unchanged, logits shift per position."""
    model.unembed.W_U.sub_(model.unembed.W_U.mean(-1, keepdim=True))
    model.unembed.b_U.sub_(model.unembed.b_U.mean())
    return model


@torch.no_grad()
def fold_value_biases(model):
    """`b_O += Σ_h b_V^h W_O^h`, `b_V = 0` (exact because every pattern row sums to 1).

    Raises:
        ConfigError: bilinear attention, whose pattern rows do not sum to 1 (nothing is changed).
    """
    if getattr(model.cfg, "attention", "softmax") != "softmax":
        raise ConfigError(
            f"fold_value_biases needs softmax attention (pattern rows summing to 1); this model has "
            f"attention={model.cfg.attention!r}, where Σ_q A[p, q] varies with p: b_V stays in the value path")
    for block in model.blocks:
        attn = block.attn
        attn.b_O.add_(torch.einsum("he,hed->d", attn.b_V, attn.W_O))
        attn.b_V.zero_()
    return model


def process_weights(model, fold_ln=True, center_writing=True, center_unembed_=True, fold_value=True):
    """TL's processing order; centering of writing weights runs only for LayerNorm models, value-bias
    folding only for softmax attention."""
    if fold_ln:
        fold_layer_norm(model)
    if center_writing and model.cfg.normalization_type in ("LN", "LNPre") and not model.cfg.final_norm_only:
        center_writing_weights(model)
    if center_unembed_:
        center_unembed(model)
    if fold_value and getattr(model.cfg, "attention", "softmax") == "softmax":  # not exact for bilinear attention
        fold_value_biases(model)
    return model
