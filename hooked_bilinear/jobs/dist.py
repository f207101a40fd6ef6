"""The torch.distributed side of a job: rank, world size, device, collectives, a shared counter.

Under ``torchrun`` (WORLD_SIZE and friends in the environment) the process group is initialised
with NCCL when the job runs on CUDA and gloo otherwise; without it, everything is local (one rank).
"""

from __future__ import annotations

import os
from typing import Any

import torch


def pick_device(device: str) -> torch.device:
    """``"auto"``: this rank's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class Dist:
    """This process's place in the job. Use as a context manager (the group is destroyed on exit)."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist = dist
        self.launched = "WORLD_SIZE" in os.environ and "RANK" in os.environ
        self._count = 0
        self.store = None
        if self.launched and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.launched else 0
        self.world = dist.get_world_size() if self.launched else 1
        if self.launched:
            try:  # the rendezvous store torchrun set up: a counter every rank can add to
                from torch.distributed import distributed_c10d

                self.store = distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError):
                self.store = None

    def __enter__(self) -> "Dist":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.launched and self.dist.is_initialized():
            self.dist.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.launched:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.launched:
            self.dist.barrier()

    def add_done(self, n: int) -> int:
        """Add n to the job-wide count of units finished in this run; returns the new total
        (this rank's own count where no shared store is available)."""
        if self.store is not None:
            return int(self.store.add("hooked_bilinear.jobs.done", n))
        self._count += n
        return self._count
