"""Bad checkpoints and names: every failure is a CheckpointError naming the problem; pickles are
never unpickled."""

import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooked_bilinear import CheckpointError
from hooked_bilinear.loading import load_pretrained

from ._checkpoints import Exploit, put_in_hub_cache, write_2024_06, write_2024_10


def _rewrite(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def _load(folder, **kwargs):
    return load_pretrained(folder, tokenizer=False, **kwargs)


def test_missing_tensor_is_named(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    _rewrite(folder, lambda t: t.pop("transformer.h.1.mlp.p.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'transformer\.h\.1\.mlp\.p\.weight'"):
        _load(folder)


def test_unknown_tensor_is_named(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    _rewrite(folder, lambda t: t.update({"transformer.h.0.attn.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unknown tensors \['transformer\.h\.0\.attn\.extra\.weight'\]"):
        _load(folder)


def test_bias_tensors_without_bias_flag_are_unknown(tmp_path):
    folder = write_2024_10(tmp_path / "c", bias=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "bias": False}))
    with pytest.raises(CheckpointError, match=r"unknown tensors .*qkv\.bias"):
        _load(folder)


def test_misshaped_tensor_is_named_with_both_shapes(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    _rewrite(folder, lambda t: t.update({"transformer.h.0.attn.qkv.weight": torch.zeros(48, 15)}))
    with pytest.raises(CheckpointError, match=r"'transformer\.h\.0\.attn\.qkv\.weight' has shape \(48, 15\).*\(48, 16\)"):
        _load(folder)


def test_config_that_disagrees_with_tensors(tmp_path):
    folder = write_2024_06(tmp_path / "c")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_vocab": 41}))
    with pytest.raises(CheckpointError, match="n_vocab=41"):
        _load(folder)


def test_wrong_rope_buffer_is_named(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    _rewrite(folder, lambda t: t["transformer.h.0.attn.rotary.inv_freq"].mul_(2))
    with pytest.raises(CheckpointError, match="rotary.inv_freq does not match"):
        _load(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_or_truncated_weights(damage, tmp_path):
    folder = write_2024_10(tmp_path / "c")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x07not a safetensors file" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        _load(folder)


def test_bad_config_json(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        _load(folder)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(CheckpointError, match=r"keys \['hidden_size'\] match no known checkpoint format"):
        _load(folder)


def test_missing_files(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights file .*model.safetensors"):
        _load(folder)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        _load(tmp_path / "does-not-exist" / "model.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        _load(tmp_path / "empty")


def test_unknown_hub_id_offline(cache_dir):
    """It leads with the closest names and says where it looked; HF_HUB_OFFLINE appears because the user set it."""
    with pytest.raises(CheckpointError, match=r"^unknown model 'tdooms/ts-mediun': did you mean \['tdooms/ts-medium'.*"
                                              r"bundled model in .*zoo.*local folder .*HF cache.*HF_HUB_OFFLINE=1"):
        load_pretrained("tdooms/ts-mediun", cache_dir=cache_dir)
    with pytest.raises(CheckpointError, match=r"^unknown model 'tiny-lmm': did you mean \['tiny-lm'\]"):
        load_pretrained("tiny-lmm", cache_dir=cache_dir)


def test_a_known_id_offline_names_hf_hub_offline_only_when_the_user_set_it(cache_dir, monkeypatch):
    with pytest.raises(CheckpointError, match="unset HF_HUB_OFFLINE"):
        load_pretrained("tdooms/fw-small", cache_dir=cache_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, but every connection fails (conftest)
    with pytest.raises(CheckpointError, match="the Hub could not be reached") as err:
        load_pretrained("tdooms/fw-small", cache_dir=cache_dir)
    assert "HF_HUB_OFFLINE" not in str(err.value)


def test_cached_config_without_weights_offline(tmp_path, cache_dir):
    folder = write_2024_10(tmp_path / "c")
    (folder / "model.safetensors").unlink()
    put_in_hub_cache(cache_dir, "tdooms/ts-large", folder)
    with pytest.raises(CheckpointError, match="tdooms/ts-large: model.safetensors is not in"):
        load_pretrained("tdooms/ts-large", cache_dir=cache_dir)


def test_invalid_hub_id():
    with pytest.raises(CheckpointError, match="'not a valid id!' is not a bundled model"):
        load_pretrained("not a valid id!")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_is_never_unpickled(name, tmp_path, cache_dir):
    marker = tmp_path / "pwned"
    folder = write_2024_10(tmp_path / "c")
    (folder / "model.safetensors").unlink()
    (folder / name).write_bytes(pickle.dumps({"transformer.wte.weight": Exploit(marker)}))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        _load(folder)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        _load(folder / name)
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", folder)
    with pytest.raises(CheckpointError, match="model.safetensors is not in"):
        load_pretrained("tdooms/ts-medium", cache_dir=cache_dir)
    assert not marker.exists()


def test_nonfinite_weights(tmp_path):
    folder = write_2024_10(tmp_path / "c")
    _rewrite(folder, lambda t: t["transformer.h.0.mlp.w.weight"].__setitem__((0, 0), float("nan")))
    with pytest.warns(UserWarning, match=r"'blocks\.0\.mlp\.W_l' contains NaN"):
        _load(folder)
    with pytest.raises(CheckpointError, match="contains NaN"):
        _load(folder, nonfinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(folder, nonfinite="ignore")


def test_unknown_keyword_argument(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['colour'\\]"):
        _load(write_2024_10(tmp_path / "c"), colour="red")


def test_unknown_names_suggest_bundled_models_and_say_no_folder_exists(tmp_path, monkeypatch):
    from hooked_bilinear.loading.registry import known_ids_hint

    monkeypatch.chdir(tmp_path)
    hint = known_ids_hint("tiny_lm")
    assert "did you mean ['tiny-lm']" in hint and "or a local folder" in hint
    assert "local folder" in known_ids_hint("path/to", "folder") and "path/to/folder" in known_ids_hint("path/to", "folder")
    (tmp_path / "path" / "to" / "folder").mkdir(parents=True)
    assert "local folder" not in known_ids_hint("path/to", "folder")
    assert known_ids_hint("tdooms/fw-medium-scope") == ""  # the SAEs of a known model are known too
    assert known_ids_hint("tdooms/ts-medium") == ""
