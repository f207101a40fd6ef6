"""Every loading test runs offline: HF_HUB_OFFLINE=1 and any socket connection fails loudly."""

import pytest

from tests._shared import no_network  # noqa: F401  (autouse)




@pytest.fixture
def cache_dir(tmp_path):
    path = tmp_path / "hf-cache"
    path.mkdir()
    return path
