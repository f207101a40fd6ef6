"""The "Why heads attend" README snippet and the docs/attention.md examples run and add up."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks(path: Path, after: str = "") -> list[str]:
    text = path.read_text()
    if after:
        text = text.split(after, 1)[1]
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _run(code: str) -> tuple[dict, str]:
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "snippet", "exec"), scope)
    return scope, out.getvalue()


def test_readme_section_runs_and_is_exact():
    scope, out = _run(_blocks(ROOT / "README.md", "### Why heads attend")[0])
    why = scope["why"]
    assert why.check().max_rel_err < 1e-5 and "top_pair" in out
    assert why.key_pos == tuple(range(13))


def test_attention_doc_examples_run():
    first, second = _blocks(ROOT / "docs" / "attention.md")[:2]
    scope, _ = _run(first)
    assert scope["d"].check().max_rel_err < 1e-5
    scope, out = _run(second)
    assert scope["d"].check().max_rel_err < 1e-10 and "nothing frozen" in out
