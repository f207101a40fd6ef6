"""Fixtures for the training tests: tiny models on one intra-op thread."""

from tests._shared import one_thread  # noqa: F401  (autouse)
