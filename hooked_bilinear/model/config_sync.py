"""Keep `cfg.dtype` and `cfg.device` equal to the weights' after `.to()`, `.double()`, `.cuda()`, ...

TransformerLens does the same (`move_to_and_update_config`). Code that reads the config (the circuit
extractor, new tensors made in forward) then follows the weights: `model.to(torch.float64)` gives
float64 circuits, not float32 ones computed from upcast weights.
"""

from __future__ import annotations

from typing import Any


class ConfigSyncMixin:
    """For an nn.Module with a `cfg` that has `dtype` and `device` fields."""

    def _apply(self, fn: Any, *args: Any, **kwargs: Any):
        out = super()._apply(fn, *args, **kwargs)
        param = next((p for p in self.parameters() if p.is_floating_point()), None)
        if param is not None and param.device.type != "meta":
            self.cfg.dtype = param.dtype
            self.cfg.device = str(param.device)
        return out
