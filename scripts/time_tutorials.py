"""Time every tutorial notebook in a fresh kernel, with and without its one-thread line, interleaved.

Three settings per notebook, run in turn (so load drift on a shared machine hits all of them alike):

- `default`: the notebook without its `torch.set_num_threads(1)` line, torch's default thread count
  (what a user's kernel did before the line was added);
- `OMP_NUM_THREADS=1`: the same notebook, the kernel pinned to one thread from outside (what the
  notebook tests used to do);
- `shipped`: the notebook as shipped (it sets one thread itself), default environment.

Usage: `python scripts/time_tutorials.py [--repeats 1] [NAME ...]`; prints one line per run and a
Markdown table of the medians (seconds, wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
LINE = "torch.set_num_threads(1)"
KERNEL = "hooked-bilinear-timing"


def kernelspec(root: Path) -> None:
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "timing", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def run(path: Path, strip: bool, env: dict[str, str]) -> float:
    nb = nbformat.read(path, as_version=4)
    if strip:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = "\n".join(l for l in cell.source.split("\n") if not l.startswith(LINE))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if v is not None})
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        with tempfile.TemporaryDirectory() as cwd:
            client = nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": cwd}})
            start = time.perf_counter()
            client.execute()
            return time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (default: all)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    if args.names:
        notebooks = [p for p in notebooks if p.stem in args.names]
    settings = {"default": (True, {"OMP_NUM_THREADS": None}),
                "OMP_NUM_THREADS=1": (True, {"OMP_NUM_THREADS": "1"}),
                "shipped": (False, {"OMP_NUM_THREADS": None})}
    with tempfile.TemporaryDirectory() as jupyter:
        kernelspec(Path(jupyter))
        base = {"JUPYTER_PATH": jupyter, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        times = {(p.stem, s): [] for p in notebooks for s in settings}
        for _ in range(args.repeats):
            for path in notebooks:
                for name, (strip, env) in settings.items():
                    t = run(path, strip, {**base, **env})
                    times[(path.stem, name)].append(t)
                    print(f"{path.stem} [{name}]: {t:.1f} s", flush=True)
    print("\n| notebook | " + " | ".join(settings) + " | default / shipped |")
    print("|---" * (len(settings) + 2) + "|")
    for path in notebooks:
        med = {s: statistics.median(times[(path.stem, s)]) for s in settings}
        print(f"| {path.name} | " + " | ".join(f"{med[s]:.1f} s" for s in settings)
              + f" | {med['default'] / med['shipped']:.1f}× |")


if __name__ == "__main__":
    main()
