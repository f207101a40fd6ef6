"""`serve` hands circuit-tracer's own frontend and our graph files to a browser, from a stdlib server."""

from __future__ import annotations

import gzip
import http.client
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs import serve, to_circuit_tracer
from tests.graphs._fixtures import hand_graph

serve_module = importlib.import_module("hooked_bilinear.graphs.serve")  # the attribute is the function
needs_ct = pytest.mark.skipif(importlib.util.find_spec("circuit_tracer") is None,
                              reason="circuit-tracer not installed: pip install --no-deps circuit-tracer==0.5.0")


def _get(port, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={**({"Content-Type": "application/json"} if body else {}),
                                                         **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, gzip.decompress(data) if response.getheader("Content-Encoding") == "gzip" else data
    finally:
        conn.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    to_circuit_tracer(hand_graph(), out, "hand")
    (out.parent / "secret.txt").write_text("not for the browser")
    return out


@needs_ct
def test_serves_frontend_and_graph_files_then_stops(folder):
    with serve(folder, port=0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        status, index = _get(server.port, "/index.html")
        assert status == 200 and b"initCg" in index and b"graph-metadata.json" in index
        status, script = _get(server.port, "/attribution_graph/init-cg.js")
        assert status == 200 and b"window.initCg" in script
        status, listing = _get(server.port, "/data/graph-metadata.json")
        assert status == 200 and [g["slug"] for g in json.loads(listing)["graphs"]] == ["hand"]
        status, graph = _get(server.port, "/graph_data/hand.json?x=1")
        assert status == 200 and json.loads(graph) == json.loads((folder / "hand.json").read_text())
        assert _get(server.port, "/graph_data/missing.json")[0] == 404
        assert _get(server.port, "/graph_data/../secret.txt")[0] == 404
        assert _get(server.port, "/data/%2e%2e/secret.txt")[0] == 404
        saved = json.dumps({"qParams": {"pinnedIds": "0_1_2", "linkType": "both"}})
        assert _get(server.port, "/save_graph/hand", "POST", saved)[0] == 200
        assert json.loads((folder / "hand.json").read_text())["qParams"]["pinnedIds"] == "0_1_2"
        assert _get(server.port, "/save_graph/..", "POST", saved)[0] == 404
        big = {"metadata": {}, "nodes": [{"node_id": f"0_{i}_0"} for i in range(60_000)]}
        (folder / "big.json").write_text(json.dumps(big))
        assert (folder / "big.json").stat().st_size > 1024**2
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/graph_data/big.json", headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.getheader("Content-Encoding") == "gzip"  # large files travel compressed
        assert json.loads(gzip.decompress(response.read())) == big
        conn.close()
        port = server.port
    with pytest.raises(OSError):
        _get(port, "/index.html")


@needs_ct
def test_finds_the_assets_without_importing_circuit_tracer():
    code = ("import sys; from hooked_bilinear.graphs.serve import frontend_dir; d = frontend_dir(); "
            "print((d / 'index.html').is_file(), sorted(m for m in sys.modules if m.startswith('circuit_tracer')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "[]"]


@needs_ct
def test_busy_port_is_a_clear_error(folder):
    with serve(folder, port=0) as server:
        with pytest.raises(InputError, match=f"{server.port}"):
            serve(folder, port=server.port)


def test_missing_wheel_names_the_install_command(folder, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(serve_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "circuit_tracer" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps circuit-tracer==0\.5\.0"):
        serve(folder, port=0)


def test_folder_without_graphs_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="graph-metadata.json"):
        serve(tmp_path, port=0)
