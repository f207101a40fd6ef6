"""Graph tests run tiny models on one intra-op thread (a 2-thread pool only adds synchronisation at d_model 8)."""

from tests._shared import one_thread  # noqa: F401  (autouse)
