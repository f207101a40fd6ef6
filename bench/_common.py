"""Shared benchmark helpers: interleaved timing with medians, machine description, table printing."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from typing import Callable, Iterator

import torch


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
                     settle: bool = False, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run each function `repeats` times, interleaving them so drift hits all equally; seconds per call.

    With `settle`, each timed call follows an untimed call of the same function, so it starts from the
    memory state its own previous call left (as in a loop) rather than the one a different case left:
    a case that frees a large cache otherwise makes the next case pay the page faults.
    `clock=time.thread_time` (with one intra-op thread) counts only this thread's CPU time, user and
    system (page faults included), not the time other processes on a shared machine take from it.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if settle:
                fn()
            start = clock()
            fn()
            times[name].append(clock() - start)
    return times


def ratio_stats(times: list[float], baseline: list[float]) -> dict[str, float]:
    """Median ratio and the spread (min/max of per-repeat ratios) against a baseline."""
    ratios = [t / b for t, b in zip(times, baseline)]
    return {
        "median_s": statistics.median(times),
        "ratio": statistics.median(times) / statistics.median(baseline),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch intra-op thread inside the block (the 2-thread pool of a shared 2-core VM made the
    per-repeat spread 0.7-1.7x); the previous count is restored on exit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rss_kb(field: str) -> int:
    """A memory field of /proc/self/status (e.g. "VmHWM", "VmRSS") in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def tag_threads(rows: list[dict]) -> list[dict]:
    """Record on every row the intra-op thread count it was measured with."""
    for r in rows:
        r["threads"] = torch.get_num_threads()
    return rows


def main(doc: str, run: Callable[[bool], list[dict]], columns: list[str], *header: str) -> None:
    """The command line of a benchmark module: `--quick`, then its table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(machine(), *header)
    print_table(run(args.quick), columns)
