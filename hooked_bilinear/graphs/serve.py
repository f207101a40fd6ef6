"""Serve circuit-tracer's own graph viewer over a folder written by `to_circuit_tracer`.

The frontend is the static `frontend/assets` folder of an installed circuit-tracer wheel, found with
`importlib.util.find_spec` and never imported: circuit-tracer's dependencies pin transformers ≤ 4.57
and cannot share an environment with transformer-lens 4.x, so install it without them:

    pip install --no-deps circuit-tracer==0.5.0

Its `index.html` loads d3, jetpack and npy (transformer-circuits.pub), dagre and pako (unpkg.com)
from CDNs: the page renders only in a browser that is online. Offline, use `to_html`.

URL layout (the one circuit-tracer's `local_server.py` and its JavaScript use): `/data/<file>` and
`/graph_data/<file>` come from `out_dir`, everything else from the assets; `POST /save_graph/<slug>`
stores the viewer's pinned nodes and groups (`qParams`) back into `<slug>.json`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Union
from urllib.parse import unquote, urlsplit

from hooked_bilinear.errors import InputError
from hooked_bilinear.graphs.export import _SLUG, METADATA_FILE

INSTALL_HINT = "pip install --no-deps circuit-tracer==0.5.0"
TESTED_VERSION = "0.5.0"
_DATA_PREFIXES = ("/data/", "/graph_data/")
_GZIP_ABOVE = 1024**2  # as circuit-tracer's local_server: large graph files travel gzipped
_MAX_POST = 16 * 1024**2
logger = logging.getLogger(__name__)


def frontend_dir() -> Path:
    """The `frontend/assets` folder of the installed circuit-tracer wheel, without importing it.

    Raises:
        ImportError: circuit-tracer is not installed, or its wheel has no frontend assets.
    """
    spec = importlib.util.find_spec("circuit_tracer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"circuit-tracer's viewer is not installed: run `{INSTALL_HINT}` "
                          "(--no-deps: its dependencies conflict with transformer-lens 4.x), or use to_html offline")
    assets = Path(list(spec.submodule_search_locations)[0]) / "frontend" / "assets"
    if not (assets / "index.html").is_file():
        raise ImportError(f"the installed circuit-tracer has no {assets / 'index.html'}: run `{INSTALL_HINT}`")
    try:
        from importlib.metadata import version

        found = version("circuit-tracer")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        found = None
    if found is not None and found != TESTED_VERSION:
        warnings.warn(f"circuit-tracer {found} is installed; the graph files follow {TESTED_VERSION}'s format",
                      stacklevel=2)
    return assets


class GraphServer:
    """A running viewer: `url`, `port`, `stop()`; a context manager; `wait()` blocks until Ctrl-C."""

    def __init__(self, httpd, thread: threading.Thread, host: str):
        self._httpd, self._thread = httpd, thread
        self.port = int(httpd.server_address[1])
        self.url = f"http://{'localhost' if host in ('', '0.0.0.0') else host}:{self.port}/"

    def __repr__(self) -> str:
        state = "running" if self._thread.is_alive() else "stopped"
        return f"GraphServer({self.url}, {state})"

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def wait(self) -> None:
        """Block until Ctrl-C, then stop."""
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "GraphServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(out_dir: Union[str, Path], port: int = 8041, open_browser: bool = False, *,
          host: str = "127.0.0.1") -> GraphServer:
    """Serve circuit-tracer's frontend over the graphs in `out_dir`, in a background thread.

    The page needs a browser that is online (it loads d3, dagre and pako from CDNs).

    Args:
        out_dir: a folder written by `to_circuit_tracer` (holding `graph-metadata.json`).
        port: TCP port; 0 picks a free one (read it from `.port`).
        open_browser: open the page in the default browser.
        host: interface to bind; the default serves this machine only.

    Returns:
        A `GraphServer`; call `.stop()` (or use it as a context manager, or `.wait()` to block).

    Raises:
        ImportError: circuit-tracer is not installed (the message says what to install).
        InputError: `out_dir` has no `graph-metadata.json`, or the port cannot be bound.

    Example:
        >>> server = serve("graphs", port=8041)    # doctest: +SKIP
        >>> server.url, server.stop()               # doctest: +SKIP
    """
    data = Path(out_dir)
    if not (data / METADATA_FILE).is_file():
        raise InputError(f"{str(data)!r} has no {METADATA_FILE}: write a graph there first with to_circuit_tracer")
    import http.server

    assets = frontend_dir()
    handler = functools.partial(_handler_class(), directory=str(assets), data_dir=data.resolve())
    try:
        httpd = http.server.ThreadingHTTPServer((host, int(port)), handler)
    except OSError as e:
        raise InputError(f"cannot serve on {host}:{port} ({e}): pass another port, or port=0 for a free one") from e
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name=f"graph-viewer-{port}", daemon=True)
    thread.start()
    server = GraphServer(httpd, thread, host)
    logger.info("serving %s over %s at %s", data, assets, server.url)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    return server


@functools.lru_cache(maxsize=None)
def _handler_class():
    """The request handler (built on first use: http.server is imported only when serving)."""
    import gzip
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, data_dir: Path, **kwargs):
            self.data_dir = data_dir
            super().__init__(*args, **kwargs)

        def log_message(self, fmt, *args) -> None:
            logger.debug("%s %s", self.address_string(), fmt % args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = urlsplit(self.path).path
            prefix = next((p for p in _DATA_PREFIXES if path.startswith(p)), None)
            if prefix is None:
                return super().do_GET()
            local = self._data_file(unquote(path[len(prefix):]))
            if local is None:
                return self.send_error(404, f"no graph file {path!r} in the served folder")
            body = local.read_bytes()
            self.send_response(200)
            if len(body) > _GZIP_ABOVE and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=3)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            slug = path[len("/save_graph/"):].strip("/") if path.startswith("/save_graph/") else ""
            local = self._data_file(f"{slug}.json") if _SLUG.match(slug) else None
            if local is None:
                return self.send_error(404, f"no graph to save at {path!r}")
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= _MAX_POST:
                return self.send_error(413 if size else 411, f"expected a JSON body of 1 to {_MAX_POST} bytes")
            try:
                body = json.loads(self.rfile.read(size))
                graph = json.loads(local.read_text())
                graph["qParams"] = dict(body["qParams"])
            except (ValueError, KeyError, TypeError) as e:
                return self.send_error(400, f"expected a JSON body with qParams ({e})")
            local.write_text(json.dumps(graph, separators=(",", ":")))
            self.send_response(200)
            self.end_headers()

        def _data_file(self, rel: str):
            """The file `rel` inside the data folder, or None (missing, or outside it)."""
            target = (self.data_dir / rel).resolve()
            if not target.is_relative_to(self.data_dir) or not target.is_file():
                return None
            return target

    return Handler
