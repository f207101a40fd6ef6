"""Inputs that used to fail with a raw torch error (or a wrong answer) now raise ours, and change nothing.

Each case: the exception type, fragments its message must contain, and the model afterwards exactly
as before (state dict, no hook left, same output). The checkpoint cases are in
`tests/loading/test_config_vs_tensors.py`.
"""

from __future__ import annotations

import pytest
import torch

from hooked_bilinear import ConfigError, HookedBilinearConfig, HookReturnError, InputError
from hooked_bilinear.circuits import Target

from ._factories import SMALL, make_model
from .test_bad_input import OK, check_case


def _decomp(m):
    return m.decompose(OK, level=2, target=1)


CASES = [
    ("tokens-on-meta", lambda m: m(torch.tensor([[1, 2]], device="meta")), InputError, ["meta device", "(1, 2)"]),
    ("tokens-on-meta-run_with_cache", lambda m: m.run_with_cache(torch.zeros(1, 3, dtype=torch.long, device="meta")),
     InputError, ["meta device"]),
    ("resid-on-meta", lambda m: m(torch.zeros(1, 3, 16, dtype=torch.float64, device="meta"), start_at_layer=1),
     InputError, ["meta device"]),
    ("hook-returns-other-device",
     lambda m: m.run_with_hooks(OK, fwd_hooks=[("blocks.0.hook_resid_mid", lambda x, hook: x.to("meta"))]),
     HookReturnError, ["blocks.0.hook_resid_mid", "device meta", "expected cpu"]),
    ("hook-returns-other-device-attn",
     lambda m: m.run_with_hooks(OK, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda x, hook: x.to("meta"))]),
     HookReturnError, ["blocks.1.attn.hook_pattern", "device meta"]),
    ("stop_at_layer-True", lambda m: m(OK, stop_at_layer=True), InputError, ["stop_at_layer", "got True"]),
    ("start_at_layer-False", lambda m: m(torch.zeros(1, 3, 16, dtype=torch.float64), start_at_layer=False),
     InputError, ["start_at_layer", "got False"]),
    ("decompose-int64", lambda m: m.decompose(OK, dtype=torch.int64), InputError,
     ["floating-point", "torch.int64"]),
    ("decompose-bool-dtype", lambda m: m.decompose(OK, level=2, target=1, dtype=torch.bool), InputError,
     ["floating-point", "torch.bool"]),
    ("decompose-string-dtype", lambda m: m.decompose(OK, dtype="float64"), InputError, ["floating-point", "'float64'"]),
    ("pair_table-minus-1", lambda m: _decomp(m).pair_table(-1), InputError, ["[0, n_layers=2)", "got -1"]),
    ("pair_table-n_layers", lambda m: _decomp(m).pair_table(2), InputError, ["[0, n_layers=2)", "got 2"]),
    ("pair_table-bool", lambda m: _decomp(m).pair_table(True), InputError, ["got True"]),
    ("target-float-position", lambda m: m.decompose(OK, target=Target.logit(1, pos=[1.5])), InputError,
     ["position 1.5", "int"]),
    ("target-empty-positions", lambda m: m.decompose(OK, target=Target.logit(1, pos=[])), InputError, ["empty"]),
    ("target-direction-wrong-rows", lambda m: m.decompose(torch.tensor([[1, 2, 3], [4, 5, 6]]),
                                                          target=Target.direction(torch.ones(3, 13, dtype=torch.float64))),
     InputError, ["shape (3, 13)", "[batch=2, 13]"]),
    ("target-direction-int", lambda m: m.decompose(OK, target=Target.direction(torch.ones(13, dtype=torch.long))),
     InputError, ["floating-point", "torch.int64"]),
    ("target-ids-float", lambda m: m.decompose(OK, target=Target.logit(torch.tensor([1.0]))), InputError,
     ["integers", "torch.float32"]),
    ("target-ids-wrong-columns", lambda m: m.decompose(OK, target=Target.logit(torch.tensor([[1, 2, 3]]), pos=[0, 1])),
     InputError, ["(1, 3)", "[1, 2]"]),
]


@pytest.mark.parametrize("call, exc, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_clear_error_and_nothing_changed(call, exc, fragments):
    check_case(make_model(), call, exc, fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_cuda_device_on_a_cpu_only_torch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"device='cuda'.*torch.cuda.is_available\(\) is False.*device='cpu'"):
        HookedBilinearConfig(**SMALL, device="cuda")


def test_unparsable_device_is_a_config_error():
    with pytest.raises(ConfigError, match=r"device='gpu0' is not a torch device"):
        HookedBilinearConfig(**SMALL, device="gpu0")


def test_stop_at_layer_ints_still_work():
    """bool is refused, int (and negative int) layers are not: the same residual as the cache."""
    model = make_model()
    _, cache = model.run_with_cache(OK)
    torch.testing.assert_close(model(OK, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])
    torch.testing.assert_close(model(OK, stop_at_layer=-1), cache["blocks.1.hook_resid_pre"])
