"""What a dictionary card reports: explained variance, L0, dead fraction and the spliced loss increase.

    explained variance = 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖²     (over every position of the eval windows)
    dead fraction      = features that never fire on the eval windows / d_sae
    loss increase      = CE(model with the dictionary spliced in, no error term) − CE(model)
"""

from __future__ import annotations

import torch
from torch import Tensor

from hooked_bilinear.errors import InputError


@torch.no_grad()
def evaluate_sae(model, sae, tokens: Tensor, batch_windows: int = 16) -> dict[str, float]:
    """The card metrics of `sae` on `model` over token windows `[n, pos]`.

    Returns:
        `{"explained_variance", "l0", "dead_fraction", "loss", "spliced_loss", "loss_increase", "n_tokens"}`.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise InputError("evaluate_sae needs token windows [n, pos >= 2], got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    c = sae.cfg
    names = [c.hook_name, c.target_hook_name]
    sse = sst = l0 = n = 0.0
    s1 = torch.zeros(c.d_out, dtype=torch.float64)
    s2 = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(c.d_sae, dtype=torch.bool)
    loss = spliced = 0.0
    for start in range(0, tokens.shape[0], batch_windows):
        batch = tokens[start:start + batch_windows]
        clean, cache = model.run_with_cache(batch, names_filter=list(dict.fromkeys(names)), return_type="loss")
        x, y = cache[names[0]].double(), cache[names[1]].double()
        acts = sae.encode(x.to(sae.W_enc.dtype))
        recons = sae.decode(acts).double()
        sse += float((y - recons).pow(2).sum())
        s1 += y.reshape(-1, c.d_out).sum(0)
        s2 += y.pow(2).sum()
        rows = y.shape[0] * y.shape[1]
        n += rows
        l0 += float((acts > 0).sum())
        fired |= (acts > 0).reshape(-1, c.d_sae).any(0)
        with model.saes([sae], use_error_term=False):
            spliced += float(model(batch, return_type="loss")) * batch.shape[0]
        loss += float(clean) * batch.shape[0]
    sst = float(s2 - s1.pow(2).sum() / n)
    windows = tokens.shape[0]
    return {"explained_variance": 1 - sse / sst, "l0": l0 / n, "dead_fraction": float((~fired).float().mean()),
            "loss": loss / windows, "spliced_loss": spliced / windows,
            "loss_increase": (spliced - loss) / windows, "n_tokens": int(n)}
