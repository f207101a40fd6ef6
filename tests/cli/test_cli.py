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


def test_every_option_has_help_text():
    import argparse

    from hooked_bilinear.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no help text"


def test_circuits_explains_any_target_and_logit_difference(model_dir, capsys):
    """The printed contributions sum to the real logit (difference) of the chosen tokens, not the top one."""
    import torch

    from hooked_bilinear import load_pretrained

    model = load_pretrained(model_dir)
    tokens = torch.tensor([[1, 2, 3]])
    logits = model(tokens)[0, -1].detach().double()
    assert main(["circuits", str(model_dir), "1 2 3", "--target", "7", "--versus", "2", "--level", "1",
                 "--top", "100"]) == 0
    text = capsys.readouterr().out
    assert "into the logit of 7 minus that of 2" in text and "logit[7] - logit[2]" in text
    assert "kind: what the term is" in text and "∑ (expandable)" in text and "norm: the residual-stream norm" in text
    rows = text.split("minus that of 2:\n")[1].split("\n\n")[0].splitlines()[1:]
    total = sum(float(r.split()[-2]) for r in rows)
    # level 1 leaves out b_U's share (a term of its own, printed too): the sum is the whole difference
    assert total == pytest.approx(float(logits[7] - logits[2]), abs=1e-4)


def test_empty_input_is_an_error_about_the_input(model_dir, capsys):
    assert main(["circuits", str(model_dir), "   "]) == 2
    assert "INPUT is empty" in capsys.readouterr().err
    assert main(["circuits", str(model_dir), "1 2", "--target", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
