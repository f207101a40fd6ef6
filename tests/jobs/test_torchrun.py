"""Real ``torchrun`` with 2 CPU ranks (gloo): same files as one process, and kill -9 then resume.

Every process runs one intra-op thread (torchrun's default, set here for the single process too):
the results are then bitwise identical for any world size.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import hooked_bilinear.jobs as jobs

from .conftest import MODEL

ARGS = ["spectra", MODEL, "--k", "4", "--chunk", "8", "--no-progress"]  # 2 layers × 8 chunks = 16 units
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
                HF_HUB_OFFLINE="1")


def _launch(prefix, out, *extra, **kw):
    return subprocess.run([*prefix, "-m", "hooked_bilinear.jobs", *ARGS, *extra, "--out", str(out)], env=_env(),
                          capture_output=True, text=True, timeout=600, **kw)


def _same(a, b):
    assert a[["layer", "direction"]].equals(b[["layer", "direction"]])
    for col in ("values", "vectors"):
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col])), col


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "single"
    res = _launch([sys.executable], out)
    assert res.returncode == 0, res.stderr
    return jobs.open(str(out))


def test_two_ranks_give_the_one_process_result(tmp_path, one_process):
    res = _launch(TORCHRUN, tmp_path / "two")
    assert res.returncode == 0, res.stderr[-3000:]
    table = jobs.open(str(tmp_path / "two"))
    assert table.attrs["manifest"]["world_size"] == 2 and len(table) == 128
    _same(table, one_process)
    ranks = {__import__("json").loads(p.read_text())["rank"] for p in (tmp_path / "two" / "units").glob("*.json")}
    assert ranks == {0, 1}


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, one_process):
    out = tmp_path / "killed"
    cmd = [*TORCHRUN, "-m", "hooked_bilinear.jobs", *ARGS, "--throttle", "0.4", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    units = out / "units"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not units.is_dir() or len(list(units.glob("*.json"))) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-job
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in units.glob("*.json")}
    assert 3 <= len(done_before) < 16, "the kill came too late to test a resume"
    with pytest.raises(jobs.JobError, match="units finished"):
        jobs.open(str(out))
    res = _launch(TORCHRUN, out)
    assert res.returncode == 0, res.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in units.glob("*.json")}
    assert len(after) == 16
    assert all(after[name] == t for name, t in done_before.items())  # finished units were not redone
    _same(jobs.open(str(out)), one_process)
