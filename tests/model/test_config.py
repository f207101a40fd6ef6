"""HookedBilinearConfig: defaults, TL fields, serialisation, seeded initialisation."""

import dataclasses
import json
import math

import pytest
import torch

from hooked_bilinear import ConfigError, HookedBilinearConfig, HookedBilinearTransformer
from hooked_bilinear._tl import TransformerLensConfig

from ._factories import CONFIGS, SMALL, config_id, make_cfg, make_model, random_tokens


def test_is_a_transformer_lens_config():
    assert isinstance(make_cfg(), TransformerLensConfig)


def test_defaults_are_filled_in():
    cfg = HookedBilinearConfig(**SMALL)
    assert cfg.attn_scale == math.sqrt(cfg.d_head)
    assert cfg.init_range == pytest.approx(0.8 / math.sqrt(cfg.d_model))
    assert cfg.device == "cpu"  # never a GPU behind the user's back
    assert cfg.n_key_value_heads == cfg.n_heads
    assert cfg.normalization_type == "LN" and cfg.positional_embedding_type == "standard"
    assert cfg.dtype == torch.float32 and cfg.gate is None and cfg.is_bilinear
    assert cfg.default_prepend_bos is False and cfg.seed is None


def test_n_heads_defaults_to_d_model_over_d_head():
    cfg = HookedBilinearConfig(**{**SMALL, "n_heads": -1})
    assert cfg.n_heads == SMALL["d_model"] // SMALL["d_head"]


def test_rotary_dim_defaults_to_d_head():
    assert make_cfg(positional_embedding_type="rotary").rotary_dim == SMALL["d_head"]
    assert make_cfg(positional_embedding_type="rotary", rotary_dim=4).rotary_dim == 4


@pytest.mark.parametrize(
    "overrides, fields",
    [
        ({}, dict(gated_mlp=True, uses_rms_norm=False, final_rms=False, act_fn="bilinear", use_attn_result=True)),
        (dict(normalization_type="RMS"), dict(uses_rms_norm=True, final_rms=True)),
        (dict(normalization_type="RMSPre"), dict(uses_rms_norm=True, final_rms=True)),
        (dict(attn_only=True), dict(gated_mlp=False)),
        (dict(gate="silu"), dict(act_fn="silu", gated_mlp=True)),
    ],
)
def test_transformer_lens_fields_follow_the_architecture(overrides, fields):
    cfg = make_cfg(**overrides)
    for name, value in fields.items():
        assert getattr(cfg, name) == value, name


def test_is_bilinear():
    assert make_cfg().is_bilinear
    assert not make_cfg(gate="silu").is_bilinear
    assert not make_cfg(attn_only=True).is_bilinear


def test_dtype_from_string():
    assert make_cfg(dtype="float64").dtype == torch.float64
    assert make_cfg(dtype="torch.float32").dtype == torch.float32


@pytest.mark.parametrize("overrides", CONFIGS, ids=[config_id(c) for c in CONFIGS])
def test_dict_and_json_round_trip(overrides):
    cfg = make_cfg(**overrides)
    data = cfg.to_dict()
    assert data["dtype"] == "float64"  # JSON-friendly
    again = HookedBilinearConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert HookedBilinearConfig.from_dict(data) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config keys.*'colour'"):
        HookedBilinearConfig.from_dict({**make_cfg().to_dict(), "colour": "red"})


def test_dict_config_builds_the_same_model():
    a = HookedBilinearTransformer(make_cfg())
    b = HookedBilinearTransformer(make_cfg().to_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cfg_must_be_a_config():
    with pytest.raises(TypeError, match="HookedBilinearConfig or dict"):
        HookedBilinearTransformer(42)


def test_model_keeps_its_own_copy_of_the_config():
    cfg = make_cfg()
    a, b = HookedBilinearTransformer(cfg), HookedBilinearTransformer(cfg)
    a.fold_layer_norm()
    assert a.cfg.normalization_type == "LNPre"
    assert b.cfg.normalization_type == "LN" and cfg.normalization_type == "LN"
    assert type(b.ln_final).__name__ == "LayerNorm"
    assert all(block.cfg is a.cfg for block in a.blocks)  # components share their model's copy


# ------------------------------------------------------------------ seeded initialisation


def test_same_seed_same_weights_different_seed_different_weights():
    a = HookedBilinearTransformer(make_cfg(seed=3))
    b = HookedBilinearTransformer(make_cfg(seed=3))
    c = HookedBilinearTransformer(make_cfg(seed=4))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    assert not torch.equal(a.W_E, c.W_E)


def test_seeded_init_leaves_global_rng_alone():
    state = torch.get_rng_state()
    HookedBilinearTransformer(make_cfg(seed=1))
    assert torch.equal(state, torch.get_rng_state())


def test_unseeded_init_uses_global_rng():
    torch.manual_seed(123)
    a = HookedBilinearTransformer(make_cfg(seed=None))
    torch.manual_seed(123)
    b = HookedBilinearTransformer(make_cfg(seed=None))
    assert torch.equal(a.W_E, b.W_E)


def test_float32_and_float64_start_from_the_same_numbers():
    a = HookedBilinearTransformer(make_cfg(dtype=torch.float32, seed=5))
    b = HookedBilinearTransformer(make_cfg(dtype=torch.float64, seed=5))
    for name, value in a.state_dict().items():
        assert torch.equal(value.double(), b.state_dict()[name]), name


def test_init_biases_zero_norm_weights_one():
    model = HookedBilinearTransformer(make_cfg(normalization_type="LN"))
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("b"):
            assert torch.count_nonzero(p) == 0, name
        elif leaf == "w":
            assert torch.all(p == 1), name


def test_bias_flags_set_requires_grad():
    model = HookedBilinearTransformer(make_cfg(attn_bias=False, mlp_bias=True, unembed_bias=False))
    assert not model.blocks[0].attn.b_Q.requires_grad and not model.unembed.b_U.requires_grad
    assert model.blocks[0].mlp.b_l.requires_grad and model.blocks[0].mlp.b_out.requires_grad
    assert model.W_E.requires_grad


@pytest.mark.parametrize("scheme", ["gpt2", "xavier_normal", "zeros"])
def test_init_schemes(scheme):
    cfg = make_cfg(init_scheme=scheme, d_model=64, d_mlp=128, n_heads=4, d_head=16, d_vocab=50)
    model = HookedBilinearTransformer(cfg)
    if scheme == "zeros":
        assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if ".W_" in f".{n}")
        return
    W_l, W_out = model.blocks[0].mlp.W_l, model.blocks[0].mlp.W_out
    if scheme == "gpt2":
        assert W_l.std().item() == pytest.approx(cfg.init_range, rel=0.1)
        # GPT-2: residual-writing matrices scaled by 1/sqrt(2 n_layers)
        assert W_out.std().item() == pytest.approx(cfg.init_range / math.sqrt(2 * cfg.n_layers), rel=0.1)
    else:
        assert W_l.std().item() == pytest.approx(math.sqrt(2 / (64 + 128)), rel=0.1)


def test_config_is_a_plain_dataclass():
    names = {f.name for f in dataclasses.fields(HookedBilinearConfig)}
    assert {"gate", "mlp_bias", "rotary_dim", "seed", "d_mlp", "normalization_type"} <= names


def test_moving_the_model_updates_cfg_dtype_and_device():
    """As TL's move_to_and_update_config: tools that read cfg (the circuit extractor) follow the weights."""
    from hooked_bilinear import HookedBilinearMLP, HookedBilinearMLPConfig

    model = make_model(dtype=torch.float32)
    assert model.cfg.dtype == torch.float32
    model.to(torch.float64)
    assert model.cfg.dtype == torch.float64 and model.W_E.dtype == torch.float64 and model.cfg.device == "cpu"
    tokens = random_tokens(model.cfg)
    assert model.decompose(tokens, level=2).check().max_rel_err < 1e-12  # float64 circuits, not float32 ones
    model.float()
    assert model.cfg.dtype == torch.float32
    image = HookedBilinearMLP(HookedBilinearMLPConfig(d_input=4, d_hidden=6, n_layers=1, n_classes=3))
    image.double()
    assert image.cfg.dtype == torch.float64
