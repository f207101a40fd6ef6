"""Clear errors for inputs the extractor cannot handle."""

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose, expand_lazy
from hooked_bilinear.errors import InputError, NotBilinearError

from ._models import make_model, tokens


@pytest.mark.parametrize("gate", ["silu", "relu", "gelu"])
def test_gated_models_are_refused(gate):
    model = make_model(1, "LN", gate=gate)
    with pytest.raises(NotBilinearError, match=f"gate='{gate}'.*not a polynomial"):
        decompose(model, tokens())
    with pytest.raises(NotBilinearError):
        model.decompose(tokens(), level=2, target=1)


def test_attention_only_gated_config_is_fine():
    """attn_only models have no MLP, so a gate setting is irrelevant."""
    model = make_model(1, "LN", attn_only=True, gate="silu")
    assert decompose(model, tokens(), level=1).check().max_rel_err < 1e-10


def test_bad_arguments_name_the_offending_value():
    model = make_model(2, "LN")
    toks = tokens()
    with pytest.raises(InputError, match="level must be"):
        decompose(model, toks, level=3)
    with pytest.raises(InputError, match="at=5"):
        decompose(model, toks, at=5)
    with pytest.raises(InputError, match="hook_resid_pre"):
        decompose(model, toks, at="blocks.0.hook_mlp_out")
    with pytest.raises(InputError, match="position 9 is out of range"):
        decompose(model, toks, target=Target.logit(1, pos=9))
    with pytest.raises(InputError, match="d_vocab=11"):
        decompose(model, toks, target=Target.direction(torch.ones(8, dtype=torch.float64)))
    with pytest.raises(InputError, match="d_model=8"):
        decompose(model, toks, at=1, target=Target.direction(torch.ones(11, dtype=torch.float64)))
    with pytest.raises(InputError, match="residual point"):
        decompose(model, toks, at=1, target=3)
    with pytest.raises(InputError, match=r"\[0, 11\)"):
        decompose(model, toks, target=Target.logit(11))
    with pytest.raises(InputError, match="target must be"):
        decompose(model, toks, target="top")
    with pytest.raises(InputError, match="n_ctx"):
        decompose(model, torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InputError, match="needs target"):
        expand_lazy(model, toks, at=1)
