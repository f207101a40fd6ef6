"""Exact attribution graphs of bilinear transformers, and their viewers.

    export.py   circuit-tracer's graph JSON and graph-metadata.json (its frontend and Neuronpedia read them)
    serve.py    circuit-tracer's own frontend, served from an installed circuit-tracer wheel (needs a browser online)
    html.py     one self-contained offline HTML page (plotly.js inlined) and a notebook `show`
"""

from hooked_bilinear.graphs.export import to_circuit_tracer
from hooked_bilinear.graphs.html import show, to_html
from hooked_bilinear.graphs.serve import GraphServer, serve

__all__ = ["GraphServer", "serve", "show", "to_circuit_tracer", "to_html"]
