"""Exact circuits of bilinear transformers: path expansion of one forward pass, and weight-only circuits.

Input-based (spec §2): `decompose(model, tokens, level=1|2|"full"|"lazy", target=...)` freezes the
attention patterns and norm scales of one forward pass and returns a `PathDecomposition` whose terms sum
exactly to the logits (or to a residual-stream point). With `target=Target.score(layer, head, p, q)` it
expands an attention score into (query source × key source) pairs instead (`circuits/qk.py`).

Weight-only (spec §4): `direct_circuit`, `ov_circuit`, `qk_circuit` (TransformerLens FactoredMatrix) and
`mlp_token_tensor` (factored token-space MLP tensors with pair/row/interaction/top-pair/eigen queries).
"""

from hooked_bilinear.circuits.counting import count_paths
from hooked_bilinear.circuits.decompose import decompose, expand_lazy
from hooked_bilinear.circuits.decomposition import CheckResult, PathDecomposition
from hooked_bilinear.circuits.errors import NotBilinearError, TooLargeError, TooManyPathsError
from hooked_bilinear.circuits.lazy import LazyExpansion
from hooked_bilinear.circuits.nodes import Node
from hooked_bilinear.circuits.qk_result import ScoreDecomposition
from hooked_bilinear.circuits.target import Target
from hooked_bilinear.circuits.token_pairs import TokenPairTensor
from hooked_bilinear.circuits.weights import direct_circuit, mlp_token_tensor, ov_circuit, qk_circuit

__all__ = [
    "CheckResult",
    "LazyExpansion",
    "Node",
    "NotBilinearError",
    "PathDecomposition",
    "ScoreDecomposition",
    "Target",
    "TooLargeError",
    "TokenPairTensor",
    "TooManyPathsError",
    "count_paths",
    "decompose",
    "direct_circuit",
    "expand_lazy",
    "mlp_token_tensor",
    "ov_circuit",
    "qk_circuit",
]
