"""The README's "Beyond one machine" snippet runs as written (in a temporary folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_jobs_snippet(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("### Beyond one machine", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "0 128 ['layer', 'direction', 'values', 'converged', 'vectors']"
    assert (tmp_path / "spectra-out" / "index.parquet").is_file()
