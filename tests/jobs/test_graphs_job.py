"""The graphs job: one attribution graph per prompt, read back by AttributionGraph.load."""

import json

import pytest
import torch

import hooked_bilinear.jobs as jobs
from hooked_bilinear.errors import JobError
from hooked_bilinear.graphs import attribute
from hooked_bilinear.jobs.graphs import GraphsJob

from .conftest import MODEL


def test_graphs_job_writes_the_graphs_attribute_gives(tmp_path, model):
    prompts = [[1, 5, 9, 1, 5], [3, 4, 3, 4, 3, 4], [7, 7, 2]]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"tokens": p}) for p in prompts) + "\n")
    out = tmp_path / "out"
    assert jobs.run(GraphsJob(MODEL, str(path), max_nodes=8, edges_per_node=8), str(out), progress=False) == 0
    table = jobs.open(str(out), graphs=True)
    assert table["prompt"].tolist() == [0, 1, 2]
    for row, p in zip(table.itertuples(), prompts):
        direct = attribute(model, torch.tensor(p), max_nodes=8, edges_per_node=8)
        assert row.graph.nodes["node_id"].tolist() == direct.nodes["node_id"].tolist()
        assert torch.allclose(torch.tensor(row.graph.edges["weight"].to_numpy()),
                              torch.tensor(direct.edges["weight"].to_numpy()))
        assert row.max_rel_err < 1e-4 and row.n_nodes == len(direct.nodes)


def test_graphs_job_bad_prompt_files(tmp_path):
    with pytest.raises(JobError, match="is not a file"):
        jobs.run(GraphsJob(MODEL, str(tmp_path / "none.txt")), str(tmp_path / "o"), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": [1, 2]}\n{"text": "x"}\n')
    with pytest.raises(JobError, match=r"line 2 must be"):
        jobs.run(GraphsJob(MODEL, str(bad)), str(tmp_path / "o"), progress=False)
    assert not (tmp_path / "o").exists()
