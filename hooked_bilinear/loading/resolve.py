"""Turn a Hub id, a local folder or a local file into local files, without surprises.

- A local folder or file wins over a Hub id of the same spelling.
- Hub files come from `huggingface_hub.hf_hub_download`, through the HF cache (`cache_dir`, default
  `HF_HUB_CACHE`); with `HF_HUB_OFFLINE=1` (read at call time) only the cache is used, no network.
- Only safetensors weights are read. Pickle files (`.bin`, `.pt`, `.pth`, `.ckpt`) are refused,
  never opened: unpickling can run arbitrary code.
- Every failure is a CheckpointError naming the id or path and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from hooked_bilinear.errors import CheckpointError

WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ETAG_TIMEOUT = 5.0  # seconds; a cached file is used when the Hub does not answer in time
OFFLINE_HINT = "run once with network access to download it, or pass a local folder"


def _offline_hint(offline: bool) -> str:
    """OFFLINE_HINT, naming HF_HUB_OFFLINE only when the user set it (never advise changing what they never set)."""
    if offline and os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return "unset HF_HUB_OFFLINE (or set it to 0) and run once with network access to download it, or pass a local folder"
    return OFFLINE_HINT


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub itself only reads it at import time)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a pickle checkpoint: refusing to unpickle it (that can run arbitrary code). "
        f"Convert it to model.safetensors with a trusted tool first"
    )


@dataclass
class Checkpoint:
    """Where a checkpoint's files are (or will be fetched from).

    Attributes:
        name: the Hub id (with `/subfolder`) or the local path, recorded as cfg.model_name.
        folder: local folder holding config.json.
        repo_id, subfolder, revision, cache_dir: set for Hub checkpoints.
        weights_file: an explicit local weights file (when a file, not a folder, was given).
    """

    name: str
    folder: Optional[Path] = None
    repo_id: Optional[str] = None
    subfolder: Optional[str] = None
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    weights_file: Optional[Path] = None

    def file(self, filename: str, required: bool = True) -> Optional[Path]:
        """Local path of `filename` (downloaded when needed); None if absent and not `required`."""
        if self.repo_id is not None:
            try:
                path = hub_file(self.repo_id, filename, subfolder=self.subfolder, revision=self.revision,
                                cache_dir=self.cache_dir)
            except CheckpointError:
                if required:
                    raise
                return None
            self.folder = path.parent
            return path
        path = self.folder / filename
        if path.exists():
            return path
        if required:
            raise CheckpointError(f"{self.name}: missing file {path}")
        return None

    def weights(self) -> Path:
        """The safetensors weights; a pickle-only checkpoint is refused by name."""
        if self.weights_file is not None:
            return self.weights_file
        if self.repo_id is None:
            path = self.folder / WEIGHTS
            if not path.exists():
                pickles = sorted(p for p in self.folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
                if pickles:
                    raise _pickle_error(pickles[0])
                raise CheckpointError(f"{self.name}: missing weights file {path} (only safetensors are read)")
            return path
        return self.file(WEIGHTS)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or Path(name).suffix in (".json", ".safetensors") + PICKLE_SUFFIXES


def resolve(name_or_path: Union[str, os.PathLike], *, subfolder: Optional[str] = None, revision: Optional[str] = None,
            cache_dir: Optional[Union[str, os.PathLike]] = None) -> Checkpoint:
    """A Checkpoint for a local folder, a local file, or a Hub id (`owner/repo[/subfolder]`).

    Raises:
        CheckpointError: a path that does not exist, a pickle file, or an invalid Hub id.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            folder = path / subfolder if subfolder else path
            if not (folder / "config.json").exists():
                models = sorted(str(p.parent.relative_to(folder)) for p in folder.glob("*/config.json"))
                hint = f"; pass subfolder= one of {models[:12]}" if models else ""
                raise CheckpointError(f"{folder} has no config.json: not a checkpoint folder{hint}")
            return Checkpoint(name=str(folder), folder=folder)
        if path.suffix in PICKLE_SUFFIXES:
            raise _pickle_error(path)
        if path.suffix == ".safetensors":
            return Checkpoint(name=str(path), folder=path.parent, weights_file=path)
        if path.name == "config.json":
            return Checkpoint(name=str(path.parent), folder=path.parent)
        raise CheckpointError(f"{path}: expected a checkpoint folder, a .safetensors file or a config.json")
    if _looks_like_path(name):
        raise CheckpointError(f"no such file or folder: {path}")
    parts = name.strip("/").split("/")
    if len(parts) > 2:  # owner/repo/sub/folder: a model inside a repo (e.g. tdooms/mnist/<model>)
        if subfolder:
            raise CheckpointError(f"{name!r} names a subfolder and subfolder={subfolder!r} names another")
        name, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    _validate_repo_id(name)
    cache = None if cache_dir is None else str(cache_dir)
    label = f"{name}/{subfolder}" if subfolder else name
    return Checkpoint(name=label, repo_id=name, subfolder=subfolder, revision=revision, cache_dir=cache)


def _validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise CheckpointError(
            f"{repo_id!r} is not a bundled model, an existing local folder or file, nor a valid Hub id ({e})"
        ) from None


class HubEntryMissing(CheckpointError):
    """The Hub answered: this file does not exist there (so listing the repo can help)."""


def _hub_reachable(repo_id: str, filename: str, subfolder: Optional[str], revision: Optional[str]) -> bool:
    """One HEAD request with a short timeout. huggingface_hub retries network errors for ~30 s when
    no cached copy exists; probing first lets an unreachable Hub fail (or fall back to the cache) at once.
    HTTP answers (404, 401...) count as reachable and surface from the real download."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, subfolder=subfolder, revision=revision),
                             timeout=ETAG_TIMEOUT)
    except HfHubHTTPError:
        return True
    except Exception:  # DNS, connection refused, timeout, proxy: the Hub cannot be reached
        return False
    return True


def hub_file(repo_id: str, filename: str, *, subfolder: Optional[str] = None, revision: Optional[str] = None,
             cache_dir: Optional[str] = None) -> Path:
    """Local path of one file of a Hub repo, from the HF cache or downloaded (unless offline).

    Raises:
        CheckpointError: not cached while offline / unreachable, no such repo, revision or file.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    from hooked_bilinear.loading.registry import known_ids_hint, unknown_model_lead

    offline = hub_offline()
    local_only = offline or not _hub_reachable(repo_id, filename, subfolder, revision)
    where = f"{repo_id}: {subfolder + '/' if subfolder else ''}{filename}"
    if revision:
        where += f" (revision {revision})"
    try:
        return Path(hf_hub_download(repo_id, filename, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_only, etag_timeout=ETAG_TIMEOUT))
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        reason = "HF_HUB_OFFLINE=1" if offline else "the Hub could not be reached"
        lead = unknown_model_lead(repo_id, subfolder, cache) if filename == "config.json" else None
        if lead is not None:
            asked = "the Hub was not asked (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
            raise CheckpointError(f"{lead}; {asked}") from None
        raise CheckpointError(
            f"{where} is not in {cache} and {reason}: {_offline_hint(offline)}{known_ids_hint(repo_id, subfolder)}"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"unknown model {repo_id!r}: no such Hub repository (or it is private/gated){known_ids_hint(repo_id)}"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id}: no revision {revision!r} on the Hub") from None
    except EntryNotFoundError:
        only = " (only safetensors weights are read, pickles never)" if filename == WEIGHTS else ""
        raise HubEntryMissing(f"{where} does not exist on the Hub{only}") from None
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id!r} is not a valid Hub id ({e})") from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{where}: download failed ({type(e).__name__}: {e}); {_offline_hint(offline)}") from None


def cached_subfolders(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                      online: bool = False) -> list[str]:
    """Subfolders with a config.json in the cached snapshot of `repo_id` (or on the Hub if `online`)."""
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = root / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = root / "snapshots" / commit if commit else None
    if snapshot is not None and snapshot.is_dir():
        return sorted(str(p.parent.relative_to(snapshot)) for p in snapshot.glob("*/**/config.json"))
    if not online or hub_offline():
        return []
    try:
        from huggingface_hub import list_repo_files

        files = list_repo_files(repo_id, revision=revision)
    except Exception:  # only a hint for an error message: never fail on it
        return []
    return sorted(f.rsplit("/", 1)[0] for f in files if f.endswith("/config.json"))
