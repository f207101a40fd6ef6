"""Every python code block of README.md and docs/*.md runs on its own, in a fresh namespace, offline.

A block that cannot run here says so on its first line with a `# not run: <reason>` comment (e.g. it needs
the Hub, or trains for minutes); it is then reported as skipped with that reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"^\s*#\s*not run:\s*(.+)$", re.M)


def blocks() -> list:
    out = []
    for path in FILES:
        for i, match in enumerate(BLOCK.finditer(path.read_text())):
            line = path.read_text()[: match.start()].count("\n") + 2
            out.append(pytest.param(path, line, match.group(1), id=f"{path.relative_to(ROOT)}:{line}"))
    return out


@pytest.fixture(autouse=True)
def offline_and_tidy(tmp_path, monkeypatch):
    """Offline, one thread, headless plots, and files the block writes land in a temporary folder."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_there_are_blocks_to_run():
    assert len(blocks()) >= 5


@pytest.mark.parametrize("path, line, code", blocks())
def test_code_block_runs_on_its_own(path, line, code):
    reason = NOT_RUN.search(code.split("\n", 1)[0])
    if reason:
        pytest.skip(f"marked not run: {reason.group(1)}")
    scope: dict = {"__name__": "__doc_block__"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, f"{path.name}:{line}", "exec"), scope)
