"""Exact attribution graphs: circuit-tracer's graphs of a bilinear transformer with zero error nodes.

`attribute(model, prompt)` freezes attention patterns and norm scales (as circuit-tracer does) and
splits every bilinear neuron exactly over its sources with the half-gradient rule (spec graphs §1),
returning an `AttributionGraph` whose every node's incoming edges sum to its real activation.

Viewers:
    export.py   circuit-tracer's graph JSON and graph-metadata.json (its frontend and Neuronpedia read them)
    serve.py    circuit-tracer's own frontend, served from an installed circuit-tracer wheel (needs a browser online)
    html.py     one self-contained offline HTML page (plotly.js inlined) and a notebook `show`
"""

from hooked_bilinear.graphs.attribute import attribute
from hooked_bilinear.graphs.export import to_circuit_tracer
from hooked_bilinear.graphs.graph import AttributionGraph, GraphCheck, GraphFormatError
from hooked_bilinear.graphs.html import show, to_html
from hooked_bilinear.graphs.serve import GraphServer, serve

__all__ = ["AttributionGraph", "GraphCheck", "GraphFormatError", "GraphServer", "attribute", "serve", "show",
           "to_circuit_tracer", "to_html"]
