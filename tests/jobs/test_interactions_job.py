"""The interactions job: M_u = D Q_u Dᵀ on the top-k input features, against a dense computation."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import hooked_bilinear.jobs as jobs
from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.interactions import InteractionsJob

from .conftest import MODEL


def test_interactions_job_matches_dense_M(tmp_path, model):
    g = torch.Generator().manual_seed(0)
    D = torch.randn(96, 64, generator=g)
    save_file({"W_dec": D}, str(tmp_path / "dec.safetensors"))
    out = tmp_path / "out"
    job = InteractionsJob(MODEL, str(tmp_path / "dec.safetensors"), layers="0,1", top_k=6, chunk=24)
    assert jobs.run(job, str(out), progress=False) == 0
    table = jobs.open(str(out))
    assert len(table) == 2 * 64 and table["output"].tolist()[:64] == list(range(64))
    for row in table.sample(6, random_state=1).itertuples():
        mlp = model.blocks[row.layer].mlp
        Dd = D.double()
        W_l, W_r, W_out = (w.detach().double() for w in (mlp.W_l, mlp.W_r, mlp.W_out))
        c = W_out @ model.W_U[:, row.output].detach().double()
        A = (W_l * c) @ W_r.T
        M = Dd @ (0.5 * (A + A.T)) @ Dd.T                         # dense [96, 96], formed here only
        top = M.norm(dim=1).topk(6).indices
        assert sorted(row.indices.tolist()) == sorted(top.tolist())
        idx = torch.from_numpy(row.indices)
        assert np.allclose(row.M, M[idx][:, idx].numpy(), rtol=1e-4, atol=1e-5 * float(M.abs().max()))


def test_interactions_job_needs_a_decoder(tmp_path):
    with pytest.raises(JobError, match="--inputs must be a dictionary decoder"):
        jobs.run(InteractionsJob(MODEL, "unembed"), str(tmp_path / "o"), progress=False)
    with pytest.raises(JobError, match="--top-k 0"):
        InteractionsJob(MODEL, "x", top_k=0)
