"""Name resolution: Hub ids with subfolders, local files, and an unreachable Hub without HF_HUB_OFFLINE."""

import time

import pytest

from hooked_bilinear import CheckpointError
from hooked_bilinear.loading import load_pretrained
from hooked_bilinear.loading.resolve import hub_offline, resolve

from ._checkpoints import put_in_hub_cache, write_2024_10


def test_hub_id_forms(tmp_path):
    ckpt = resolve("tdooms/mnist/n0-wd0-r0-t0")
    assert (ckpt.repo_id, ckpt.subfolder, ckpt.name) == ("tdooms/mnist", "n0-wd0-r0-t0", "tdooms/mnist/n0-wd0-r0-t0")
    with pytest.raises(CheckpointError, match="names a subfolder and subfolder='x' names another"):
        resolve("tdooms/mnist/a", subfolder="x")
    folder = write_2024_10(tmp_path / "c")
    assert resolve(folder / "config.json").folder == folder
    assert resolve(folder).repo_id is None


def test_hf_hub_offline_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()


def test_unreachable_hub_uses_the_cache_without_retrying(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # "online", but every connection fails (conftest)
    put_in_hub_cache(cache_dir, "tdooms/ts-medium", write_2024_10(tmp_path / "c"))
    start = time.perf_counter()
    model = load_pretrained("tdooms/ts-medium", cache_dir=cache_dir, tokenizer=False)
    assert model.cfg.model_name == "tdooms/ts-medium"
    with pytest.raises(CheckpointError, match="tdooms/fw-small: config.json is not in .* the Hub could not be reached"):
        load_pretrained("tdooms/fw-small", cache_dir=cache_dir)
    assert time.perf_counter() - start < 10  # huggingface_hub alone retries for ~30 s
