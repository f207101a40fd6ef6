"""Circuit tests draw figures headlessly and run their tiny models on one intra-op thread.

Why one thread: the models are d_model 8, where a 2-thread OpenMP pool only adds synchronisation; on a
loaded machine a single torch.softmax call then took 20 ms instead of 0.1 ms.
"""

import matplotlib

matplotlib.use("Agg")


from tests._shared import one_thread  # noqa: F401  (autouse)
