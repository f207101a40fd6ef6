"""One-thread CPU-time ratios of realsize_spectra (time.thread_time: robust on a shared machine).

    python bench/_spectra_cpu.py [N_DIRECTIONS] [THREADS]   (THREADS > 1: wall time instead)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realsize_spectra import K, TOL, random_layer  # noqa: E402

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
n = int(sys.argv[1]) if len(sys.argv) > 1 else 160
bt, U = random_layer(n)
cases = {"dense eigh": (lambda: bt.spectra(U[:2], vectors=True), 2),
         "dense eigvalsh": (lambda: bt.spectra(U[:2]), 2),
         "block vectors": (lambda: bt.spectra(U, top=K, method="block", vectors=True, tol=TOL), n),
         "block values": (lambda: bt.spectra(U, top=K, method="block", tol=TOL), n)}
with torch.no_grad():
    per = {}
    for name, (fn, m) in cases.items():
        t0 = clock()
        fn()
        per[name] = (clock() - t0) / m
        print(f"{name}: {per[name] * 1e3:.0f} ms a direction ({clock.__name__})", flush=True)
print(f"eigh / block vectors: {per['dense eigh'] / per['block vectors']:.2f}; "
      f"eigvalsh / block values: {per['dense eigvalsh'] / per['block values']:.2f}; "
      f"eigh / block values: {per['dense eigh'] / per['block values']:.2f}")
