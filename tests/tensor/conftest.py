"""Fixtures for the tensor-algebra tests: random bilinear weights, no model needed.

Shape annotations are checked by ``test_annotations.py`` (jaxtyping + beartype wrappers). Setting
HB_TYPECHECK=1 additionally runs *every* call in these tests through beartype via the jaxtyping import
hook (if hooked_bilinear.tensor was not imported earlier in the session); tests of the library's own
error messages are skipped then, since beartype rejects those inputs first.
"""

import os

import pytest
import torch

from tests._shared import one_thread  # noqa: F401,E402  (autouse: tiny matrices, small LAPACK calls)

TYPECHECK = os.environ.get("HB_TYPECHECK") == "1"
if TYPECHECK:
    from jaxtyping import install_import_hook

    with install_import_hook("hooked_bilinear.tensor", "beartype.beartype"):
        import hooked_bilinear.tensor  # noqa: F401

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(params=DTYPES, ids=["fp64", "fp32"])
def dtype(request) -> torch.dtype:
    return request.param


