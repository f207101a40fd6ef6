"""The dictionaries bundled for tiny-lm: small, loadable by name, and their cards recomputed."""

import json

import pytest
import torch

from hooked_bilinear import HookedBilinearTransformer, load_sae
from hooked_bilinear.features import bundled_saes
from hooked_bilinear.features.bundle import DICTIONARIES, eval_tokens
from hooked_bilinear.features.metrics import evaluate_sae

NAMES = [f"tiny-lm/{n}" for n in DICTIONARIES]


@pytest.fixture(scope="module")
def model():
    return HookedBilinearTransformer.from_pretrained("tiny-lm")


def test_bundled_files_are_small_and_listed():
    found = bundled_saes()
    assert set(NAMES) <= set(found)
    for name in NAMES:
        size = sum(p.stat().st_size for p in found[name].iterdir())
        assert size < 3_000_000, f"{name} is {size:,} bytes"


@pytest.mark.parametrize("name", NAMES)
def test_card_metrics_are_recomputed(model, name):
    torch.set_num_threads(1)
    sae = load_sae(name)
    card = json.loads((bundled_saes()[name] / "card.json").read_text())
    assert sae.cfg.hook_name == card["hook_name"] and sae.cfg.k == card["k"]
    m = evaluate_sae(model, sae, eval_tokens(model)[:32])
    assert m["explained_variance"] == pytest.approx(card["metrics"]["explained_variance"], abs=0.05)
    assert m["loss_increase"] == pytest.approx(card["metrics"]["loss_increase"], abs=0.05)
    assert m["dead_fraction"] <= card["metrics"]["dead_fraction"] + 0.05
    assert m["explained_variance"] > 0.5 and m["loss_increase"] < 0.5


def test_readme_features_snippet_runs():
    import contextlib
    import io
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text.split("### Features (SAEs and transcoders)", 1)[1], re.S).group(1)
    out, scope = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    assert "rank-2 correlation > 0.75" in out.getvalue()
    assert torch.equal(scope["logits"], scope["model"].run_with_cache(scope["tokens"])[0])  # same call, no SAEs
    assert scope["acts"].shape[-1] == 512 and ((scope["acts"] > 0).sum(-1) <= 16).all()
    assert scope["cards"][0]["index"] == 7 and len(scope["pairs"]) == 5
