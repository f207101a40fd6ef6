"""Feature nodes: graphs in the basis of a dictionary (SAE) on a block's MLP output (spec graphs §1.2).

An SAE reading `blocks.{l}.hook_mlp_out` has, with its active set frozen (TopK, ReLU and JumpReLU are
linear on it), activations linear in the block's neurons:

    act_f = (mlp_out / n − b_dec·[apply]) · W_enc[:, f] + b_enc[f] = Σ_k w_fk h_k + c_f,
    w_fk = W_out[k] · W_enc[:, f] / n,   c_f = (b_out / n − b_dec·[apply]) · W_enc[:, f] + b_enc[f]

so a feature row's edges are `Σ_k w_fk e(s→k)` (its encoder is the same combination of the neurons'
half-gradients) plus its own constant `Σ_k w_fk own_k + c_f`, and they sum to act_f exactly. Downstream,
the block writes `mlp_out = Σ_f act_f n W_dec[f] + n b_dec + ε`: the features, the constant `n b_dec`
(into C_{l}_{p}) and the reconstruction error ε[p], an explicit node per position whose write is known
exactly (`X_{l}_{p}`, kind "error"). Nothing is approximated: every row still sums to its value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


@dataclass
class FeatureLayer:
    """One block's dictionary, folded for the graph (n positions, m = d_mlp, F = d_sae, d = d_model)."""

    w: Tensor        # [m, F]  w_fk
    c: Tensor        # [F]     c_f
    dec: Tensor      # [F, d]  n W_dec
    bdec: Tensor     # [d]     n b_dec
    act: Tensor      # [n, F]  activations replayed from the frozen run (sources use these)
    act_real: Tensor  # [n, F] activations of the real forward pass (the rows' reference values)
    err: Tensor      # [n, d]  ε = mlp_out − reconstruction (replayed)

    @property
    def d_sae(self) -> int:
        return self.w.shape[1]


def basis_layers(model, basis) -> dict[int, object]:
    """{layer: sae} from an SAE or a list of them; each must read `blocks.{l}.hook_mlp_out`."""
    if basis is None:
        return {}
    saes = basis if isinstance(basis, (list, tuple)) else [basis]
    out = {}
    for sae in saes:
        cfg = getattr(sae, "cfg", None)
        name = getattr(cfg, "hook_name", None)
        parts = name.split(".") if isinstance(name, str) else []
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] != "hook_mlp_out":
            raise InputError(f"a graph basis must be an SAE on 'blocks.{{l}}.hook_mlp_out', got one at {name!r}")
        if cfg.is_transcoder:
            raise InputError(f"the SAE at {name!r} is a transcoder (writes to {cfg.hook_name_out!r}); "
                             "graph bases take SAEs on the MLP output")
        l = int(parts[1])
        if not 0 <= l < model.cfg.n_layers or model.cfg.attn_only:
            raise InputError(f"{name!r} is not an MLP output of this model (n_layers={model.cfg.n_layers})")
        if cfg.d_in != model.cfg.d_model:
            raise InputError(f"the SAE at {name!r} has d_in={cfg.d_in} but d_model is {model.cfg.d_model}")
        if l in out:
            raise InputError(f"two SAEs given for {name!r}")
        out[l] = sae
    return out


@torch.no_grad()
def fold_feature_layer(sae, L, h_replay: Tensor, mlp_out_real: Tensor) -> FeatureLayer:
    """The graph's view of one SAE on the MLP output of folded layer L."""
    dt = h_replay.dtype
    W_enc, b_enc = sae.W_enc.detach().to(dt), sae.b_enc.detach().to(dt)
    W_dec, b_dec = sae.W_dec.detach().to(dt), sae.b_dec.detach().to(dt)
    n = float(sae.cfg.normalize) if sae.cfg.normalize is not None else 1.0
    shift = b_dec if sae.cfg.apply_b_dec_to_input else torch.zeros_like(b_dec)

    def pre(mlp_out: Tensor) -> Tensor:
        return (mlp_out / n - shift) @ W_enc + b_enc

    # on its active set the encoder is linear (act = pre); the active set comes from the SAE's own
    # nonlinearity in its dtype, the values from the pre-activations in the graph's dtype
    pre_real = pre(mlp_out_real.to(dt))
    active = sae.activation(pre_real.to(sae.W_enc.dtype)) != 0
    zero = torch.zeros_like(pre_real)
    real = torch.where(active, pre_real, zero)
    mlp_out = h_replay @ L.W_out + L.b_out
    act = torch.where(active, pre(mlp_out), zero)  # the replay differs from the real pass only by rounding
    err = mlp_out - (act @ W_dec + b_dec) * n
    return FeatureLayer(w=(L.W_out @ W_enc) / n, c=(L.b_out / n - shift) @ W_enc + b_enc, dec=W_dec * n,
                        bdec=b_dec * n, act=act, act_real=real, err=err)
