"""Start-up time: `import hooked_bilinear` and the CLI's `--help` / `list`, as ratios to `import torch`.

Every case runs in a fresh `python -c ...` subprocess (nothing cached in the process), interleaved with
the baseline so load on a shared machine hits both alike; medians over repeats. `import hooked_bilinear`
defers every submodule (PEP 562), so it imports neither torch nor transformer-lens; `--help` and `list`
need neither either. The full model import (`from hooked_bilinear import HookedBilinearTransformer`,
which brings torch and transformer-lens) is shown for reference.

    python bench/startup.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, ratio_stats, time_interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "import torch": "import torch",
    "import hooked_bilinear": "import hooked_bilinear",
    "hooked-bilinear --help": "import sys; sys.argv = ['hooked-bilinear', '--help']; from hooked_bilinear.cli import main; main()",
    "hooked-bilinear list": "from hooked_bilinear.cli import main; main(['list'])",
    "from hooked_bilinear import HookedBilinearTransformer": "from hooked_bilinear import HookedBilinearTransformer",
}
TARGETS = {"import hooked_bilinear": "<= 0.5", "hooked-bilinear --help": "<= 0.5", "hooked-bilinear list": "<= 1.0"}


def _runner(code: str):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")

    def run() -> None:
        subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    return run


def run(quick: bool = False) -> list[dict]:
    times = time_interleaved({name: _runner(code) for name, code in CASES.items()}, repeats=3 if quick else 7,
                             warmup=1)
    rows = []
    for name in CASES:
        if name == "import torch":
            continue
        stats = ratio_stats(times[name], times["import torch"])
        rows.append({"bench": "startup", "case": f"{name} / import torch", **stats,
                     "baseline_s": sorted(times["import torch"])[len(times["import torch"]) // 2],
                     "target": TARGETS.get(name, "reference"),
                     "note": "fresh subprocess each; median of interleaved repeats"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    start = time.perf_counter()
    rows = run(args.quick)
    print_table(rows, ["case", "median_s", "baseline_s", "ratio", "ratio_min", "ratio_max", "target"])
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
