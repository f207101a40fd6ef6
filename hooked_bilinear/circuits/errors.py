"""Errors of the circuit extractor; each names the offending value and what to do instead."""

from __future__ import annotations

from hooked_bilinear.errors import NotBilinearError


class TooManyPathsError(ValueError):
    """Full enumeration of the path trees would create more terms than the caller allowed.

    Attributes:
        n_terms: the exact number of terms the enumeration would produce (spec §2.3 formula).
        max_terms: the limit that was exceeded.
    """

    def __init__(self, n_terms: int, max_terms: int, what: str = "full enumeration"):
        self.n_terms, self.max_terms = n_terms, max_terms
        super().__init__(
            f"{what} would produce {n_terms:,} path terms, above max_terms={max_terms:,} (the count grows "
            "doubly exponentially with depth, spec §2.3); use the lazy mode instead, e.g. "
            "decompose(model, tokens, level='lazy', target=..., budget=200), which keeps the unexpanded "
            "nodes as exact remainder terms, or pass a larger max_terms"
        )


class TooLargeError(ValueError):
    """A dense tensor (or a table of full-logit terms) would exceed the caller's memory limit."""


__all__ = ["NotBilinearError", "TooLargeError", "TooManyPathsError"]
