"""Sharded, resumable jobs on torch.distributed: whole-vocabulary spectra and other per-unit analyses.

    python -m hooked_bilinear.jobs spectra MODEL --directions unembed --layers all --k 8 --out DIR
    torchrun --nproc-per-node 8 -m hooked_bilinear.jobs spectra MODEL ... --out DIR   # same files
    table = hooked_bilinear.jobs.open(DIR)     # one row per (layer, direction)

The runner (``runner.py``) is shared; each job kind is one module with a ``Job`` subclass. A job
is a pure function of (weights, unit): ranks take fixed shares, write one safetensors shard and one
record per unit atomically, and a rerun skips the finished units (see ``store.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hooked_bilinear.errors import JobError

if TYPE_CHECKING:
    import pandas as pd

    from hooked_bilinear.jobs.base import Job

# kind → "module:class"; imported only when that kind is used.
KINDS = {"spectra": "hooked_bilinear.jobs.spectra:SpectraJob", "graphs": "hooked_bilinear.jobs.graphs:GraphsJob",
         "interactions": "hooked_bilinear.jobs.interactions:InteractionsJob"}


def job_class(kind: str) -> type["Job"]:
    """The ``Job`` subclass of a kind name."""
    if kind not in KINDS:
        raise JobError(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def run(job: "Job", out: str, **kwargs: Any) -> int:
    """Run a job into ``out`` (see ``runner.run``); returns 0 when every unit is finished."""
    from hooked_bilinear.jobs.runner import run as _run

    return _run(job, out, **kwargs)


def open(path: str, partial: bool = False, **options: Any) -> "pd.DataFrame":  # noqa: A001 - the reader's name
    """The results of the job in folder ``path`` as one table (``df.attrs["manifest"]`` holds its manifest).

    Args:
        path: a job's output folder.
        partial: read the finished units only, instead of refusing a job with failed or missing units.
        **options: passed to the kind's ``table`` (spectra: ``vectors=False`` skips the eigenvectors).

    Raises:
        JobError: no manifest there, or (without ``partial``) units that failed or never ran.
    """
    from hooked_bilinear.jobs.store import Store

    store = Store(path)
    manifest = store.read_manifest()
    if manifest is None:
        raise JobError(f"{path} has no manifest.json: not a hooked_bilinear.jobs output folder")
    records = store.records()
    finished = store.finished(records)
    if not partial and len(finished) != manifest["n_units"]:
        failed = sorted(u for u, r in records.items() if r.get("status") == "failed" and u not in finished)
        missing = manifest["n_units"] - len(finished) - len(failed)
        detail = f"; first failure {failed[0]}: {records[failed[0]].get('error')}" if failed else ""
        raise JobError(f"{path}: {len(finished)} of {manifest['n_units']} units finished, {len(failed)} failed, "
                       f"{missing} missing{detail}; rerun the job to resume it, or open(..., partial=True)")
    table = job_class(manifest["kind"]).table(manifest, {u: records[u] for u in finished}, store, **options)
    table.attrs["manifest"] = manifest
    return table


__all__ = ["KINDS", "JobError", "job_class", "open", "run"]
