"""bench/graphs.py: one small case end to end, and its rows in the form bench/run_all.py reads.

The benchmark's numbers are not asserted (timings are measured by the benchmark, never by tests);
what is asserted is what could be wrong in the harness: the sweep bound it reports, the rows'
fields and targets, and the FLOP count it compares the time with.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graphs_bench():
    return _load("graphs")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS needs Linux /proc/self/clear_refs")
def test_one_case_measures_sweeps_memory_and_rows(graphs_bench):
    spec = {"model": "induction-2l", "n": 17, "max_nodes": [6], "repeats": 1}
    # in a fresh process, as the bench runs it: this one may already keep freed memory (hooked_bilinear.allocator,
    # set by any earlier run_with_cache), which would hide the peak-RSS deltas
    res = graphs_bench.run_case(spec, timeout=600)
    (case,) = res["cases"]
    # rows = the logit targets plus the neuron rows asked for (the model has 2 x 17 x 128 neurons)
    assert case["rows"] == case["targets"] + 6
    assert case["sweeps"] <= math.ceil(case["rows"] / case["batch"]) + 1
    assert case["rel_err"] < 1e-4
    assert case["peak_kb"] > 0 and res["cache_kb"] > 0 and case["graph_kb"] > 0

    rows = graphs_bench.rows_for(spec, res)
    assert [r["case"].rsplit(": ", 1)[1] for r in rows] == ["time", "sweeps", "peak memory"]
    run_all = _load("run_all")
    for row in rows:
        assert row["bench"] == "graphs" and isinstance(row["ratio"], float)
    assert run_all.target_met(rows[0]) is None                       # time: reference
    assert run_all.target_met(rows[1]) is True                       # sweeps within the bound
    assert run_all.target_met(rows[2]) == (rows[2]["ratio"] <= graphs_bench.MEM_TARGET)


def test_flop_counts_match_a_brute_force_count(graphs_bench):
    from hooked_bilinear import HookedBilinearConfig

    cfg = HookedBilinearConfig(n_layers=3, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=11, n_ctx=32)
    n, rows = 5, 7
    # per row and block: G @ W_out.T (n x d x m), G through W_O and W_V (n x d x H d_head each), the pattern (H n n d_head)
    per_block = 2 * (n * 8 * 16 + n * 8 * 2 * 4 + n * 8 * 2 * 4 + 2 * n * n * 4)
    assert graphs_bench.sweep_flops(cfg, n, rows) == rows * 3 * per_block
    # forward: q, k, v, o (4 d H d_head), l, r, out (3 d m) per layer, the unembedding, QK and AV (2 n² H d_head each)
    fwd = 2 * n * (3 * (4 * 8 * 8 + 3 * 8 * 16) + 8 * 11) + 3 * 2 * (2 * n * n * 2 * 4)
    assert graphs_bench.forward_flops(cfg, n) == fwd
