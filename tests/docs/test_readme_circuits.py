"""The README's Circuits snippet runs as written, and its precision comments hold."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_circuits_precision_snippet():
    section = README.read_text().split("### Circuits", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(compile(code, str(README), "exec"), scope)
    finally:
        torch.set_num_threads(before)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "float64 pass of the float32 model" in lines[1]
    rel = [float(line.split("max rel err ")[1]) for line in lines]
    mass = [float(re.search(r"abs mass ([0-9.e+-]+)", line).group(1)) for line in lines]
    assert rel[0] < 1e-5 and mass[0] < 1e-5  # float32
    assert rel[1] < 1e-13 and mass[1] < 1e-13  # float64 reference pass
    model, tokens = scope["model"], scope["tokens"]
    logits = model(tokens).detach()
    want = logits[:, 21].gather(1, tokens[:, 5:6])[:, 0] + logits[:, 17].gather(1, tokens[:, 1:2])[:, 0]
    total = model.decompose(tokens, level=2, target=scope["target"]).total
    torch.testing.assert_close(total, want, rtol=1e-5, atol=1e-5)
