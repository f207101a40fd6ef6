"""The README's Quickstart runs as written and prints what its comments promise."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block(after_heading: str) -> str:
    text = README.read_text()
    section = text.split(after_heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {after_heading!r} in README.md"
    return match.group(1)


def test_readme_first_lines_give_the_two_commands():
    head = README.read_text().splitlines()[:15]
    assert any("pip install torch==2.13.0" in line and "hooked-bilinear demo" in line for line in head)
    assert any(line.strip() == "python3 -m pytest -q" for line in head)
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in ci and "torch==2.13.0" in ci


def test_quickstart_runs_and_predicts_95():
    code = _python_block("## Quickstart")
    assert len(code.strip().splitlines()) <= 12, "the quickstart should stay about 10 lines"
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), scope)
    lines = out.getvalue().splitlines()
    assert lines[0] == "95"
    assert lines[1] == f"torch.Size([1, 3, {scope['model'].cfg.d_mlp}])"
    check = scope["paths"].check()
    assert check.max_rel_err < 1e-5
    assert "mlp0(" in out.getvalue()
    eig = scope["eig"]
    assert eig.values.abs()[:-1].ge(eig.values.abs()[1:] - 1e-6).all()  # sorted by |λ|


def test_model_and_tensor_snippets_print_what_they_promise():
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(_python_block("### The hooked transformer"), str(README), "exec"), scope)
    assert "blocks.1.hook_resid_pre torch.Size([2, 16, 64])" in out.getvalue()
    model = scope["model"]
    assert tuple(model.W_l.shape) == (2, 64, 256) and tuple(model.W_out.shape) == (2, 256, 64)
    assert not model.blocks[1].hook_resid_pre._forward_hooks  # the context removed its hook
    scope = {}
    exec(compile(_python_block("### The bilinear tensor"), str(README), "exec"), scope)
    d = scope["model"].cfg.d_model
    assert scope["e"].values.shape == (d,) and scope["Q"].shape == (d, d)
