"""Bad input to the QK expansion: a clear error naming the problem, and nothing changed."""

import pytest
import torch

from hooked_bilinear.circuits import Target, decompose
from hooked_bilinear.errors import InputError, NotBilinearError

from ._models import make_model, tokens


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, before):
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(hp.fwd_hooks or hp.bwd_hooks for hp in model.hook_points())


@pytest.mark.parametrize("target, message", [
    (Target.score(2, 0, 3), "layer 2 is out of range.*n_layers=2"),
    (Target.score(-1, 0, 3), "layer -1 is out of range"),
    (Target.score(1, 2, 3), "head 2 is out of range.*n_heads=2"),
    (Target.score(1, 0, 6), "query position 6 is out of range for a sequence of 6"),
    (Target.score(1, 0, -7), "query position -7 is out of range"),
    (Target.score(1, 0, 3, key_pos=4), "key position 4 is after query position 3.*-inf.*\\[0, 3\\]"),
    (Target.score(1, 0, 2, key_pos=[0, 5]), "key position 5 is after query position 2"),
    (Target.score(1, 0, 3, key_pos=9), "key position 9 is out of range"),
    (Target.score(1, 0, 3, key_pos=[1, 1]), "repeat a position"),
])
def test_bad_positions_layers_and_heads(target, message):
    model = make_model(2, "LN", "rotary")
    before = _state(model)
    with pytest.raises(InputError, match=message):
        decompose(model, tokens(), target=target)
    _assert_untouched(model, before)


def test_bad_constructor_arguments():
    with pytest.raises(InputError, match="layer must be an int"):
        Target.score(1.0, 0, 3)
    with pytest.raises(InputError, match="query_pos must be an int"):
        Target.score(1, 0, None)
    with pytest.raises(InputError, match="key_pos must be None, an int or a"):
        Target.score(1, 0, 3, key_pos="a")
    with pytest.raises(InputError, match="non-empty list"):
        Target.score(1, 0, 3, key_pos=[])


def test_bad_level_and_at():
    model = make_model(2, "LN")
    with pytest.raises(InputError, match="score target takes level in"):
        decompose(model, tokens(), level="lazy", target=Target.score(1, 0, 3))
    with pytest.raises(InputError, match="at= must stay 'logits'"):
        decompose(model, tokens(), at=1, target=Target.score(1, 0, 3))


@pytest.mark.parametrize("gate", ["silu", "gelu"])
def test_gated_model_is_refused(gate):
    model = make_model(2, "LN", gate=gate)
    before = _state(model)
    with pytest.raises(NotBilinearError, match=f"gate='{gate}'"):
        decompose(model, tokens(), target=Target.score(1, 0, 3))
    _assert_untouched(model, before)


def test_table_views_name_missing_key_positions():
    d = decompose(make_model(2, "LN"), tokens(), target=Target.score(1, 0, 3, key_pos=[0, 2]))
    with pytest.raises(KeyError, match=r"key positions \[0, 2\]: pass key_pos"):
        d.pair_table()
    with pytest.raises(KeyError, match="key_pos=1 is not in this decomposition"):
        d.pair_table(key_pos=1)
    with pytest.raises(KeyError, match="cannot group by 'label'"):
        d.group("label")


def test_describe_names_head_and_positions():
    assert Target.score(1, 0, 3, key_pos=[0, 2]).describe() == \
        "attention score of head 1.0 at query pos 3, key pos (0, 2)"
