"""save_pretrained / from_pretrained: bit-identical round trips and clear errors for bad checkpoints."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooked_bilinear import CheckpointError, HookedBilinearMLP, HookedBilinearMLPConfig, HookedBilinearTransformer

from ._factories import make_model, make_wordlevel_tokenizer, random_tokens

ROUND_TRIP = [
    dict(),
    dict(normalization_type="RMS", positional_embedding_type="rotary"),
    dict(normalization_type="RMSPre", positional_embedding_type="rotary", rotary_dim=4, rotary_base=500.0),
    dict(normalization_type=None, positional_embedding_type="none", mlp_bias=True),
    dict(attn_only=True, normalization_type="LNPre"),
    dict(gate="silu", attn_bias=False, unembed_bias=False),
    dict(dtype=torch.float32, n_layers=3, n_heads=4, d_head=4, attn_scale=2.0, eps=1e-8),
]


def assert_same_model(a, b):
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name
    assert {n: p.requires_grad for n, p in a.named_parameters()} == {n: p.requires_grad for n, p in b.named_parameters()}


@pytest.mark.parametrize("overrides", ROUND_TRIP, ids=lambda o: "-".join(map(str, o.values())) or "default")
def test_round_trip_is_bit_identical(tmp_path, overrides):
    model = make_model(**overrides)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = HookedBilinearTransformer.from_pretrained(tmp_path)
    assert loaded.cfg == model.cfg
    assert_same_model(model, loaded)
    tokens = random_tokens(model.cfg)
    assert torch.equal(loaded(tokens), model(tokens))
    assert set(loaded.hook_dict) == set(model.hook_dict)


def test_round_trip_with_tokenizer(tmp_path):
    model = make_model(tokenizer=make_wordlevel_tokenizer(bos=True), tokenizer_name="toy-words")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = HookedBilinearTransformer.from_pretrained(str(tmp_path))
    assert loaded.cfg.tokenizer_name == "toy-words"
    assert loaded.to_tokens("the cat", prepend_bos=True).tolist() == [[2, 3, 4]]
    assert loaded.to_string([3, 4]) == "the cat"
    assert torch.equal(loaded("the big dog"), model("the big dog"))


def test_round_trip_of_a_processed_model(tmp_path):
    model = make_model(mlp_bias=True)
    model.process_weights()
    model.save_pretrained(tmp_path)
    loaded = HookedBilinearTransformer.from_pretrained(tmp_path)
    assert loaded.cfg.normalization_type == "LNPre" and loaded.cfg.layer_norm_folding
    assert_same_model(model, loaded)


def test_loaded_model_is_independent_of_the_files(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    loaded = HookedBilinearTransformer.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    tokens = random_tokens(model.cfg)
    with torch.no_grad():
        loaded.W_E.add_(1.0)
    assert not torch.equal(loaded(tokens), model(tokens))  # loaded weights are writable, own memory
    assert torch.equal(make_model()(tokens), model(tokens))


def test_dtype_override_on_load(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    loaded = HookedBilinearTransformer.from_pretrained(tmp_path, dtype="float32")
    assert loaded.cfg.dtype == torch.float32 and loaded.W_E.dtype == torch.float32
    assert torch.equal(loaded.W_E, model.W_E.float())


def test_saving_twice_overwrites(tmp_path):
    make_model().save_pretrained(tmp_path)
    second = make_model(normalization_type="RMS")
    second.save_pretrained(tmp_path)
    assert_same_model(second, HookedBilinearTransformer.from_pretrained(tmp_path))


@pytest.mark.parametrize("overrides", [dict(), dict(residual=True, bias=True, n_layers=2), dict(gate="relu")])
def test_image_model_round_trip(tmp_path, overrides):
    cfg = HookedBilinearMLPConfig(d_input=64, d_hidden=12, input_shape=(8, 8), seed=0, dtype="float64", **overrides)
    model = HookedBilinearMLP(cfg)
    model.save_pretrained(tmp_path)
    loaded = HookedBilinearMLP.from_pretrained(tmp_path)
    assert isinstance(loaded, HookedBilinearMLP)
    assert loaded.cfg == model.cfg and loaded.cfg.input_shape == (8, 8)
    assert_same_model(model, loaded)
    images = torch.rand(5, 8, 8, dtype=torch.float64)
    assert torch.equal(loaded(images), model(images))
    with pytest.raises(CheckpointError, match="HookedBilinearMLP"):  # the wrong class says which one to use
        HookedBilinearTransformer.from_pretrained(tmp_path)


# ------------------------------------------------------------------ bad checkpoints


@pytest.fixture
def saved(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    return tmp_path, model


def rewrite_weights(path: Path, edit):
    state = load_file(str(path / "model.safetensors"))
    edit(state)
    save_file(state, str(path / "model.safetensors"))


def test_mismatched_tensor_shape_names_the_tensor_and_both_shapes(saved):
    path, _ = saved
    rewrite_weights(path, lambda s: s.__setitem__("blocks.1.mlp.W_r", torch.zeros(16, 20, dtype=torch.float64)))
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(path)
    message = str(info.value)
    assert "'blocks.1.mlp.W_r'" in message and "(16, 20)" in message and "(16, 24)" in message


def test_config_that_disagrees_with_the_weights(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["d_mlp"] = 30
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config d_mlp=30 but tensor 'blocks.0.mlp.W_l' has shape \(16, 24\)"):
        HookedBilinearTransformer.from_pretrained(path)


def test_missing_and_unexpected_tensors_are_named(saved):
    path, _ = saved

    def edit(state):
        del state["blocks.0.attn.W_Q"]
        state["blocks.0.attn.W_Z"] = torch.zeros(1)

    rewrite_weights(path, edit)
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(path)
    message = str(info.value)
    assert "missing ['blocks.0.attn.W_Q']" in message and "unexpected ['blocks.0.attn.W_Z']" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header", "missing"])
def test_corrupt_or_truncated_weights_raise_checkpoint_error(saved, damage):
    path, _ = saved
    weights = path / "model.safetensors"
    raw = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00\xff" * 50)
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "header":
        weights.write_bytes(raw[:8] + b"#" * 4 + raw[12:])
    else:
        weights.unlink()
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(path)
    assert "model.safetensors" in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_corrupt_config_raises_checkpoint_error(saved, text):
    path, _ = saved
    (path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match="config.json"):
        HookedBilinearTransformer.from_pretrained(path)


@pytest.mark.parametrize("edit, fragment", [({"d_mlp": -3}, "d_mlp must be a positive integer"),
                                            ({"colour": "red"}, "unknown config keys ['colour']")])
def test_invalid_config_values_raise_checkpoint_error_naming_the_file(saved, edit, fragment):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(CheckpointError) as info:
        HookedBilinearTransformer.from_pretrained(path)
    assert str(path / "config.json") in str(info.value) and fragment in str(info.value)


def test_misspelled_override_is_named(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match=r"overrides \['dtpye'\]"):
        HookedBilinearTransformer.from_pretrained(path, dtpye="float32")


def test_nan_weights_warn_by_default_and_raise_on_request(saved):
    path, _ = saved

    def poison(state):
        state["blocks.0.mlp.W_l"][3, 4] = float("nan")
        state["unembed.W_U"][0, 0] = float("inf")

    rewrite_weights(path, poison)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = HookedBilinearTransformer.from_pretrained(path)
    messages = [str(w.message) for w in caught]
    assert any("'blocks.0.mlp.W_l' contains NaN or inf" in m for m in messages)
    assert torch.isnan(model.blocks[0].mlp.W_l[3, 4])  # loaded as is: the user was warned
    with pytest.raises(CheckpointError, match="'blocks.0.mlp.W_l' contains NaN or inf"):
        HookedBilinearTransformer.from_pretrained(path, nonfinite="raise")


def test_finite_weights_do_not_warn(saved):
    path, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HookedBilinearTransformer.from_pretrained(path)


def test_unknown_model_name_raises_checkpoint_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="no-such-model-xyz"):
        HookedBilinearTransformer.from_pretrained("no-such-model-xyz")
