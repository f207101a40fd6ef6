"""Errors raised by the bilinear tensor algebra.

``NotBilinearError`` is the package-wide class (a gated layer is refused the same way everywhere).
"""

from hooked_bilinear.errors import NotBilinearError

__all__ = ["MaterializeTooLargeError", "NotBilinearError"]


class MaterializeTooLargeError(ValueError):
    """Materializing a dense tensor would allocate more bytes than the caller allowed.

    Attributes:
        n_bytes: bytes the dense tensor would need.
        max_bytes: the limit that was exceeded.
    """

    def __init__(self, what: str, shape: tuple[int, ...], dtype, n_bytes: int, max_bytes: int):
        self.n_bytes, self.max_bytes = n_bytes, max_bytes
        super().__init__(
            f"materializing {what} of shape {list(shape)} ({dtype}) needs {n_bytes:,} bytes, "
            f"above max_bytes={max_bytes:,}; pass a larger max_bytes to allow it, or use the "
            "factored queries instead"
        )
