"""Exact attribution graphs: circuit-tracer's graphs of a bilinear transformer with zero error nodes.

`attribute(model, prompt)` freezes attention patterns and norm scales (as circuit-tracer does) and
splits every bilinear neuron exactly over its sources with the half-gradient rule (spec graphs §1),
returning an `AttributionGraph` whose every node's incoming edges sum to its real activation.
"""

from hooked_bilinear.graphs.attribute import attribute
from hooked_bilinear.graphs.graph import AttributionGraph, GraphCheck, GraphFormatError

__all__ = ["AttributionGraph", "GraphCheck", "GraphFormatError", "attribute"]
