"""What a job kind provides to the runner: a pure function of (weights, unit) → tensors.

A kind subclasses ``Job``: ``setup`` loads what every unit needs (the model, the directions) once
per process, ``params`` identifies the job (it goes into the manifest; a rerun with other params
into the same folder is refused), ``units`` lists the unit ids in a fixed order (the rank shares
are ``units[rank::world]``), ``run_unit`` computes one unit, and ``table`` turns the finished
shards back into one table for ``hooked_bilinear.jobs.open``. A unit's result must not depend on
which rank computes it or on what else that rank computed, so any world size gives the same files.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

    from hooked_bilinear.jobs.store import Store


class Job:
    """Base class of the job kinds (see the module docstring)."""

    kind: str = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The kind's command-line arguments (after ``python -m hooked_bilinear.jobs <kind>``)."""
        raise NotImplementedError

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Job":
        raise NotImplementedError

    def setup(self, device: torch.device) -> None:
        """Load the model and inputs on ``device``; raise ``JobError`` for bad input."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """JSON-serialisable identity of the job (written to, and checked against, the manifest)."""
        raise NotImplementedError

    def units(self) -> list[str]:
        """Unit ids in a fixed order; each becomes a file name ([A-Za-z0-9_.-])."""
        raise NotImplementedError

    def run_unit(self, unit: str) -> tuple[dict[str, Tensor] | Callable[[Path], Any], dict[str, Any]]:
        """(tensors for the unit's safetensors shard, or ``write(path)`` writing the kind's own file
        format there, e.g. ``graph.save``; JSON metadata for its record)."""
        raise NotImplementedError

    @classmethod
    def table(cls, manifest: dict, records: dict[str, dict], store: "Store", **options: Any) -> "pd.DataFrame":
        """One table of the finished units (``records``: unit id → record, all ok)."""
        raise NotImplementedError


def load_model(name: str, device: torch.device, dtype: str | None = None):
    """``HookedBilinearTransformer.from_pretrained(name)`` on ``device``; a bad name raises ``JobError``."""
    from hooked_bilinear import HookedBilinearTransformer
    from hooked_bilinear.errors import CheckpointError, JobError

    try:
        model = HookedBilinearTransformer.from_pretrained(name, device=str(device))
    except CheckpointError as e:
        raise JobError(f"model {name!r}: {e}") from e
    return model.to(getattr(torch, dtype)) if dtype is not None else model
