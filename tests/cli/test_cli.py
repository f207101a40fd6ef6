"""The hooked-bilinear command: demo, list, info, circuits, and its errors."""

from __future__ import annotations

import pytest

from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, bundled_models
from hooked_bilinear.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = HookedBilinearConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=12, n_ctx=4,
                               seed=0, model_name="cli-test")
    path = tmp_path_factory.mktemp("model")
    HookedBilinearTransformer(cfg).save_pretrained(path)
    return path


def test_demo_prints_exact_paths_and_writes_plot(model_dir, tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--model", str(model_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prediction at the last position" in text
    assert "max rel err" in text
    rel = float(text.split("max rel err ")[1].split()[0])
    assert rel < 1e-5  # float64 terms against the float32 forward pass
    assert out.exists() and out.stat().st_size > 5_000


@pytest.mark.skipif("modadd-113-1l" not in bundled_models(), reason="zoo model not bundled")
def test_demo_default_model_predicts_the_sum(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "d.png")]) == 0
    text = capsys.readouterr().out
    assert "prediction at the last position: 95" in text  # (37 + 58) % 113


def test_circuits_on_token_ids(model_dir, capsys):
    assert main(["circuits", str(model_dir), "1 2 3", "--level", "1", "--top", "5"]) == 0
    text = capsys.readouterr().out
    assert "input tokens: [1, 2, 3]" in text
    assert "top 5 paths" in text


def test_info_and_list(model_dir, capsys):
    assert main(["info", str(model_dir)]) == 0
    assert "d_mlp: 32" in capsys.readouterr().out
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "tdooms/ts-medium" in text
    for name in bundled_models():
        assert name in text


def test_unknown_model_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["circuits", "no-such-model", "1 2"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_text_input_without_tokenizer_is_refused(model_dir):
    with pytest.raises(SystemExit, match="no tokenizer"):
        main(["circuits", str(model_dir), "hello world"])


def test_out_of_range_token_is_a_clear_error(model_dir, capsys):
    assert main(["circuits", str(model_dir), "1 99"]) == 2
    assert "out of range" in capsys.readouterr().err
