"""Fixtures for the tensor-algebra tests: random bilinear weights, no model needed.

Shape annotations are checked by ``test_annotations.py`` (jaxtyping + beartype wrappers). Setting
HB_TYPECHECK=1 additionally runs *every* call in these tests through beartype via the jaxtyping import
hook (if hooked_bilinear.tensor was not imported earlier in the session); tests of the library's own
error messages are skipped then, since beartype rejects those inputs first.
"""

import os

import pytest
import torch

TYPECHECK = os.environ.get("HB_TYPECHECK") == "1"
if TYPECHECK:
    from jaxtyping import install_import_hook

    with install_import_hook("hooked_bilinear.tensor", "beartype.beartype"):
        import hooked_bilinear.tensor  # noqa: F401

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(params=DTYPES, ids=["fp64", "fp32"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny matrices, where intra-op threads only add overhead; on a shared CPU,
    OpenMP barriers made small LAPACK calls ~50x slower. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
