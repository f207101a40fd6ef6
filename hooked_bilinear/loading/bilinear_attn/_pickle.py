"""Reading `torch.save` state dicts without ever running pickled code.

`torch.load(weights_only=True)` uses torch's restricted unpickler: only tensors, storages and plain
containers are rebuilt, and any other global (a class, `os.system`, `open`, ...) is refused before it
is called. Every refusal becomes a CheckpointError naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor

from hooked_bilinear.errors import CheckpointError


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a `torch.save` file (a state dict, or a dict holding one under `model_state_dict`).

    Raises:
        CheckpointError: unreadable file, anything but tensors inside (refused unexecuted), or no state dict.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True) — it holds objects other than tensors, which "
            f"would run code if unpickled; nothing from it was executed ({str(e).splitlines()[0][:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable torch.save checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(blob, dict) and isinstance(blob.get("model_state_dict"), dict):
        blob = blob["model_state_dict"]
    if not isinstance(blob, dict) or not blob or not all(isinstance(k, str) for k in blob):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(blob).__name__}")
    state = {k: v for k, v in blob.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return state
