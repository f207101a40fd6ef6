"""The job runner in one process: results against dense float64, resume, and every bad input."""

import json

import numpy as np
import pytest
import torch

import hooked_bilinear.jobs as jobs
from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.__main__ import main
from hooked_bilinear.jobs.spectra import SpectraJob

from .conftest import MODEL, expected_top


class CountingJob(SpectraJob):
    """Counts the units it computes (to see what a resume recomputes)."""

    def __init__(self, *a, fail_at=None, **kw):
        super().__init__(*a, **kw)
        self.ran, self.fail_at = [], fail_at

    def run_unit(self, unit):
        self.ran.append(unit)
        return super().run_unit(unit)


def test_spectra_table_matches_dense_float64(tmp_path, model):
    out = tmp_path / "out"
    assert jobs.run(SpectraJob(MODEL, k=4, chunk=16), str(out), progress=False) == 0
    table = jobs.open(str(out))
    assert len(table) == 2 * 64 and list(table.columns) == ["layer", "direction", "values", "converged", "vectors"]
    assert table.attrs["manifest"]["status"] == {"ok": 8, "failed": 0, "missing": 0}
    for row in table.sample(12, random_state=0).itertuples():
        ref = expected_top(model, row.layer, row.direction, 4)
        assert np.allclose(np.abs(row.values), ref.abs().numpy(), rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
        V = torch.from_numpy(row.vectors).double()
        mlp = model.blocks[row.layer].mlp
        u = model.W_U[:, row.direction].detach().double()
        D = mlp.W_out.detach().double() @ u
        A = (mlp.W_l.detach().double() * D) @ mlp.W_r.detach().double().T
        Q = 0.5 * (A + A.T)
        assert float((Q @ V - V * torch.from_numpy(row.values).double()).abs().max()) < 1e-3 * float(ref.abs().max())


def test_rerun_skips_finished_units_and_retries_lost_ones(tmp_path):
    out = tmp_path / "out"
    first = CountingJob(MODEL, k=3, chunk=16, layers="1")
    assert jobs.run(first, str(out), progress=False) == 0
    assert len(first.ran) == 4
    reference = jobs.open(str(out))
    # what a kill -9 can leave: a record lost before it was renamed, a half-written temporary shard
    (out / "units" / "L001-D0000032.json").unlink()
    (out / "shards" / ".L001-D0000048.safetensors.tmp-123").write_bytes(b"garbage")
    (out / "units" / "L001-D0000016.json").write_text("{not json")  # torn record: not finished
    with pytest.raises(JobError, match="2 of 4 units finished, 0 failed, 2 missing"):
        jobs.open(str(out))
    again = CountingJob(MODEL, k=3, chunk=16, layers="1")
    assert jobs.run(again, str(out), progress=False) == 0
    assert sorted(again.ran) == ["L001-D0000016", "L001-D0000032"]
    table = jobs.open(str(out))
    assert len(table) == 64 and table["direction"].tolist() == list(range(64))
    assert all(np.array_equal(a, b) for a, b in zip(table["vectors"], reference["vectors"]))


def test_failed_unit_is_recorded_and_the_job_goes_on(tmp_path):
    U = torch.randn(40, 64, generator=torch.Generator().manual_seed(0))
    U[20, 3] = float("nan")
    from safetensors.torch import save_file

    save_file({"U": U}, str(tmp_path / "dirs.safetensors"))
    out = tmp_path / "out"
    job = SpectraJob(MODEL, directions=str(tmp_path / "dirs.safetensors"), k=2, chunk=16, layers="0")
    assert jobs.run(job, str(out), progress=False) == 1
    rec = json.loads((out / "units" / "L000-D0000016.json").read_text())
    assert rec["status"] == "failed" and "directions [20] hold NaN" in rec["error"]
    with pytest.raises(JobError, match="1 failed.*L000-D0000016.*NaN"):
        jobs.open(str(out))
    part = jobs.open(str(out), partial=True, vectors=False)
    assert part["direction"].tolist() == list(range(16)) + list(range(32, 40))
    assert "vectors" not in part.columns
    import pandas as pd

    index = pd.read_parquet(out / "index.parquet")
    assert index["status"].tolist() == ["ok", "failed", "ok"]


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_bad_inputs_are_refused_and_change_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(JobError, match="model 'no-such-model'"):
        jobs.run(SpectraJob("no-such-model"), str(out), progress=False)
    with pytest.raises(JobError, match="'tokens' is neither a direction set"):
        jobs.run(SpectraJob(MODEL, directions="tokens"), str(out), progress=False)
    torch.save(torch.randn(5, 7), tmp_path / "wrong.pt")
    with pytest.raises(JobError, match=r"shape \(5, 7\).*d_model=64"):
        jobs.run(SpectraJob(MODEL, directions=str(tmp_path / "wrong.pt")), str(out), progress=False)
    with pytest.raises(JobError, match="--layers '2'"):
        jobs.run(SpectraJob(MODEL, layers="2"), str(out), progress=False)
    with pytest.raises(JobError, match="--k 0"):
        SpectraJob(MODEL, k=0)
    assert not out.exists()

    assert jobs.run(SpectraJob(MODEL, k=2, chunk=32, layers="0"), str(out), progress=False) == 0
    before = _files(out)
    with pytest.raises(JobError, match="manifest of another job.*k: 2 there, 3 now"):
        jobs.run(SpectraJob(MODEL, k=3, chunk=32, layers="0"), str(out), progress=False)
    assert _files(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    # a folder started by an older spectra solver (no "solver" in its params) is not resumed into mixed results
    old_params = {k: v for k, v in manifest["params"].items() if k != "solver"}
    (out / "manifest.json").write_text(json.dumps(dict(manifest, params=old_params)))
    before = _files(out)
    with pytest.raises(JobError, match="manifest of another job.*solver"):
        jobs.run(SpectraJob(MODEL, k=2, chunk=32, layers="0"), str(out), progress=False)
    assert _files(out) == before
    (out / "manifest.json").write_text(json.dumps(dict(manifest, world_size=2)))
    before = _files(out)
    with pytest.raises(JobError, match="started with world size 2 but this run has 1"):
        jobs.run(SpectraJob(MODEL, k=2, chunk=32, layers="0"), str(out), progress=False)
    assert _files(out) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(JobError, match="non-empty folder without a job manifest"):
        jobs.run(SpectraJob(MODEL, k=2), str(tmp_path / "other"), progress=False)
    with pytest.raises(JobError, match="has no manifest.json"):
        jobs.open(str(tmp_path / "other"))
    with pytest.raises(JobError, match="unknown job kind 'graphz'"):
        jobs.job_class("graphz")


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["spectra", "no-such-model", "--out", str(tmp_path / "o")]) == 2
    assert "error: model 'no-such-model'" in capsys.readouterr().err
    assert main(["spectra", MODEL, "--layers", "1", "--k", "2", "--chunk", "64", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 0
    assert len(jobs.open(str(tmp_path / "o"))) == 64
