"""Exact attribution graphs: circuit-tracer's graphs of a bilinear transformer with zero error nodes.

`attribute(model, prompt)` freezes attention patterns and norm scales (as circuit-tracer does) and
splits every bilinear neuron exactly over its sources with the half-gradient rule (spec graphs §1),
returning an `AttributionGraph` whose every node's incoming edges sum to its real activation.

Viewers:
    export.py   circuit-tracer's graph JSON and graph-metadata.json (its frontend and Neuronpedia read them)
    serve.py    circuit-tracer's own frontend, served from an installed circuit-tracer wheel (needs a browser online)
    html.py     one self-contained offline HTML page (plotly.js inlined) and a notebook `show`
"""

import importlib
import sys
import types
from typing import Any

# Imported on first use (PEP 562), so that the CLI can register `graph` (graphs/command.py) without
# importing torch or transformer-lens for `hooked-bilinear --help`.
_LAZY = {"attribute": "attribute", "to_circuit_tracer": "export", "AttributionGraph": "graph",
         "GraphCheck": "graph", "GraphFormatError": "graph", "show": "html", "to_html": "html",
         "GraphServer": "serve", "serve": "serve"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hooked_bilinear.graphs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hooked_bilinear.graphs.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """`graphs.serve` is the function, as with the eager imports of old, though a submodule has that name:
    the import system binds the submodule here when it is first imported, so that binding is redirected."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "serve" and isinstance(value, types.ModuleType) and hasattr(value, "serve"):
            value = value.serve
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = ["AttributionGraph", "GraphCheck", "GraphFormatError", "GraphServer", "attribute", "serve", "show",
           "to_circuit_tracer", "to_html"]
