"""Run every benchmark module in one process and write BENCHMARKS.md at the repository root.

Each module in MODULES that exists under bench/ is imported and its `run(quick) -> list[dict]` called;
a module that is missing or raises is skipped with the error printed and recorded. Rows carry at
least `bench`, `case`, `ratio`, `target`; `ratio_min`/`ratio_max` (the spread over repeats), `met`
(True/False/None) and `note` are optional. Without `met`, a target of the form "<= x" / "< x" /
">= x" / "> x" is checked against the median ratio; any other target (e.g. "reference") is n/a.

    python bench/run_all.py [--quick] [--only forward,tl_bridge] [--out BENCHMARKS.md] [--allocator glibc]
    python -m bench.run_all --quick
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import re
import resource
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):  # modules import `_common` directly or `bench._common`
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

from _common import machine  # noqa: E402

MODULES = ["forward", "allocator", "tl_bridge", "memory", "tensor", "circuits", "loading", "scaling", "graphs", "attention",
           "realsize", "startup", "generate"]
_TARGET = re.compile(r"^\s*(<=|<|>=|>)\s*([0-9]*\.?[0-9]+)")


def retain_freed_memory() -> bool:
    """Keep freed memory from the start (the library's `keep_freed_memory`, which run_with_cache calls anyway).

    By default glibc returns large freed blocks to the OS, and on this kind of VM every 4 KiB page
    touched afresh costs ~1 µs; a run_with_cache whose ~66 MiB cache is freed between repeats then
    pays ~10 ms of page faults per call. The library asks glibc to keep freed memory on the first
    run_with_cache (hooked_bilinear.allocator); this applies it before any bench runs.
    """
    from hooked_bilinear import allocator

    return allocator.keep_freed_memory().active


def allocator_line() -> str:
    """The allocator state at the end of the run, for the report."""
    from hooked_bilinear import allocator

    state = allocator.state()
    if state is None:
        return "glibc defaults (nothing called run_with_cache, so the library left malloc alone)"
    if state.active:
        return (f"freed memory kept for reuse ({state.reason}; set by the library on the first run_with_cache, "
                "as users get it)")
    return f"glibc defaults: freed memory goes back to the OS and fresh pages are faulted in ({state.reason})"


def target_met(row: dict):
    """True/False where the row has a checkable target, None where it is informational."""
    if "met" in row:
        return row["met"]
    m = _TARGET.match(str(row.get("target", "")))
    ratio = row.get("ratio")
    if m is None or not isinstance(ratio, (int, float)):
        return None
    op, bound = m.group(1), float(m.group(2))
    return {"<=": ratio <= bound, "<": ratio < bound, ">=": ratio >= bound, ">": ratio > bound}[op]


def run_modules(names: list[str], quick: bool) -> tuple[list[dict], list[tuple[str, str]], dict[str, tuple]]:
    """Rows of every module that ran, (name, error) of those skipped, and {name: (seconds, page faults)}."""
    rows, skipped, seconds = [], [], {}
    for name in names:
        if not (BENCH / f"{name}.py").exists():
            print(f"[run_all] skip {name}: bench/{name}.py not found", flush=True)
            skipped.append((name, "module not present"))
            continue
        print(f"[run_all] {name} ...", flush=True)
        start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        try:
            module = importlib.import_module(name)
            out = module.run(quick)
        except Exception as exc:  # one broken bench must not hide the others
            traceback.print_exc()
            print(f"[run_all] skip {name}: {type(exc).__name__}: {exc}", flush=True)
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        seconds[name] = (time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
        for row in out:
            row.setdefault("bench", name)
            row["met"] = target_met(row)
            rows.append(row)
        print(f"[run_all] {name}: {len(out)} rows in {seconds[name][0]:.1f} s", flush=True)
    return rows, skipped, seconds


def _num(v, fmt="{:.3f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def _spread(row: dict) -> str:
    lo, hi = row.get("ratio_min"), row.get("ratio_max")
    return f"{_num(lo)}–{_num(hi)}" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else "–"


def _met(v) -> str:
    return "n/a" if v is None else ("yes" if v else "**no**")


def _cell(v) -> str:
    return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")


def print_rows(rows: list[dict]) -> None:
    cols = [("bench", lambda r: r["bench"]), ("case", lambda r: r.get("case", "")),
            ("ratio", lambda r: _num(r.get("ratio"))), ("spread", _spread),
            ("target", lambda r: str(r.get("target", ""))), ("met", lambda r: _met(r["met"]).strip("*"))]
    table = [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, (c, _) in enumerate(cols)]
    print("  ".join(c.ljust(w) for (c, _), w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))


def markdown(rows, skipped, seconds, quick: bool, command: str, load: tuple, started: str, allocator: str) -> str:
    met = [r for r in rows if r["met"] is True]
    unmet = [r for r in rows if r["met"] is False]
    lines = ["# Benchmarks", ""]
    if quick:
        lines += ["> **Quick run** (`--quick`: fewer repeats, smaller sweeps). These numbers show that the suite",
                  "> works; they are not the project's final figures. Regenerate on a quiet machine without `--quick`.",
                  ""]
    busiest = max(load[0][0], load[1][0])
    if busiest > (os.cpu_count() or 1):
        lines += [f"> **Loaded machine**: the 1-minute load average reached {busiest} on {os.cpu_count()} cores during",
                  "> this run, so other processes competed for the CPU and the time ratios below are not reliable.",
                  ""]
    lines += [
        f"Generated by `{command}` on {started}.",
        "",
        f"- Machine: {machine()}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, CPU, float32",
        f"- Load average (1/5/15 min) at start: {load[0]}; at end: {load[1]}. Ratios are measured",
        "  interleaved against a baseline in the same run, which cancels slow drift but not bursts of",
        "  contention; treat a wide spread as a noisy measurement.",
        f"- Allocator: {allocator}",
        f"- Wall time (minor page faults) per module: "
        f"{', '.join(f'{k} {v[0]:.0f} s ({v[1]:,})' for k, v in seconds.items()) or '–'}",
        "",
        "## Summary",
        "",
        f"{len(rows)} rows: {len(met)} targets met, {len(unmet)} missed, "
        f"{len(rows) - len(met) - len(unmet)} informational (reference or no target).",
        "",
    ]
    for r in unmet:
        lines.append(f"- missed: {r['bench']} / {r.get('case', '')}: ×{_num(r.get('ratio'))} vs target {r.get('target')}")
    for name, why in skipped:
        lines.append(f"- skipped: `{name}`: {_cell(why)}")
    if unmet or skipped:
        lines.append("")
    lines += ["Ratio = median time (or peak memory) of the case / median of its baseline in the same run; "
              "spread = min–max of the per-repeat ratios.", ""]
    for bench in dict.fromkeys(r["bench"] for r in rows):
        group = [r for r in rows if r["bench"] == bench]
        base = group[0].get("baseline")
        lines += [f"## {bench}" + (f" (baseline: {base})" if base else ""), "",
                  "| case | ratio | spread | target | met | note |", "|---|---|---|---|---|---|"]
        for r in group:
            note = r.get("note", "")
            if isinstance(r.get("median_s"), (int, float)):
                note = f"{r['median_s'] * 1e3:.2f} ms" + (f"; {note}" if note else "")
            lines.append(f"| {_cell(r.get('case'))} | {_num(r.get('ratio'))} | {_spread(r)} | "
                         f"{_cell(r.get('target'))} | {_met(r['met'])} | {_cell(note)} |")
        lines.append("")
    plots = list(dict.fromkeys(r["plot"] for r in rows if r.get("plot")))
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sweeps (a smoke test)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="Markdown report ('-' for none)")
    parser.add_argument("--allocator", choices=["library", "retain", "glibc"], default="library",
                        help="'library' (default): what users get, freed memory kept from the first run_with_cache; "
                             "'retain': kept from the start; 'glibc': glibc's defaults "
                             "(HOOKED_BILINEAR_KEEP_FREED_MEMORY=0)")
    args = parser.parse_args(argv)
    names = MODULES if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown bench {unknown}; choose from {MODULES}")
    if args.allocator == "glibc":
        os.environ["HOOKED_BILINEAR_KEEP_FREED_MEMORY"] = "0"  # before anything calls run_with_cache
    elif args.allocator == "retain":
        retain_freed_memory()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_start = tuple(round(x, 2) for x in os.getloadavg())
    print(machine(), flush=True)
    rows, skipped, seconds = run_modules(names, args.quick)
    load_end = tuple(round(x, 2) for x in os.getloadavg())
    print()
    print_rows(rows)
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    if args.out != "-":
        command = "python bench/run_all.py" + (" --quick" if args.quick else "") + \
                  (f" --only {args.only}" if args.only else "") + \
                  (f" --allocator {args.allocator}" if args.allocator != "library" else "")
        text = markdown(rows, skipped, seconds, args.quick, command, (load_start, load_end), started, allocator_line())
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
