"""Every tutorial notebook runs top to bottom, offline, in a fresh kernel, as a reader would run it.

Each notebook executes in its own kernel started from *this* interpreter (a kernelspec written to a
temporary JUPYTER_PATH, so nothing needs `ipykernel install` and a stale system-wide `python3`
kernelspec cannot point elsewhere), with the working directory set to a temporary folder,
MPLBACKEND=Agg and HF_HUB_OFFLINE=1. A failing cell fails the test and shows the cell's traceback.

Run only these: `python -m pytest -m notebook tests/tutorials`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebook

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
KERNEL_NAME = "hooked-bilinear-tutorials"
CELL_TIMEOUT_S = 120  # one cell; the slowest cell takes a few seconds on 2 CPU cores
NOTEBOOK_BUDGET_S = float(os.environ.get("HB_NOTEBOOK_BUDGET_S", 180))  # whole notebook, start to end
MAX_NOTEBOOK_BYTES = 300_000
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for the current interpreter on a private JUPYTER_PATH, plus the offline env."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (hooked_bilinear tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    env = {
        "JUPYTER_PATH": os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")])),
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        # No thread pin here: the kernel starts with torch's default thread count, as a user's does, and
        # each notebook sets its own in its first cell (see tutorials/README.md for the measured times).
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_tutorials_exist():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 5, f"expected the five tutorial notebooks in {TUTORIALS}, found {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_small_clean_and_output_free(path):
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size:,} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells and nb.cells[0].cell_type == "markdown", f"{path.name} should open with a markdown cell"
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"{path.name}: clear the outputs before committing (cells {with_outputs})"
    n_md = sum(c.cell_type == "markdown" for c in nb.cells)
    assert n_md >= len(nb.cells) // 3, f"{path.name}: only {n_md} of {len(nb.cells)} cells are prose"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, kernel_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
        allow_errors=False,
    )
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError as e:
        failure = f"a cell ran longer than {CELL_TIMEOUT_S} s\n{e}"
    except nbclient.exceptions.CellExecutionError as e:
        failure = f"a cell failed\n{e}"
    if failure is not None:  # outside the except block, so pytest shows only the cell's traceback
        pytest.fail(f"{path.name}: {ANSI.sub('', failure)}", pytrace=False)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < NOTEBOOK_BUDGET_S, f"{path.name} took {elapsed:.0f} s, over the {NOTEBOOK_BUDGET_S:.0f} s budget"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    # Files a notebook writes must go to its own temporary folders, not the working directory.
    assert not leftovers, f"{path.name} left files in its working directory: {leftovers}"
