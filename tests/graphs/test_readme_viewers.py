"""The README's graph-viewer snippet runs as written and writes what its comments say."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.skipif(importlib.util.find_spec("circuit_tracer") is None,
                    reason="the snippet serves circuit-tracer's frontend: pip install --no-deps circuit-tracer==0.5.0")
def test_viewer_snippet_runs(tmp_path, monkeypatch):
    section = README.read_text().split("### Graph viewers", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), scope)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/index\.html\?slug=induction\n", out.getvalue())
    page = (tmp_path / "induction.html").read_text()
    assert "Plotly.newPlot" in page and not re.search(r"<script[^>]*\bsrc=", page)
    listing = json.loads((tmp_path / "graphs" / "graph-metadata.json").read_text())
    assert [g["slug"] for g in listing["graphs"]] == ["induction"] and listing["graphs"][0]["node_threshold"] == 0.8
    assert scope["path"] == Path("graphs") / "induction.json"
    assert not scope["server"]._thread.is_alive()  # stopped
