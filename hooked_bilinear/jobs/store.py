"""The output folder of a job: a manifest, one safetensors shard and one record per finished unit.

    DIR/manifest.json             kind, params, world size, unit count (written once, by rank 0)
    DIR/shards/<unit>.safetensors the unit's tensors
    DIR/units/<unit>.json         its record: status "ok" (with the shard's size) or "failed" (error)
    DIR/index.parquet             every record as one table, written at the end of each run

Every file is written under a temporary name in the same folder and renamed into place (atomic on
POSIX), and a unit's record is written only after its shard, so a process killed at any instant
(kill -9 included) leaves either a finished unit or no record: the records are the manifest of
finished units, and nothing half-written is ever read as complete.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hooked_bilinear.errors import JobError

FORMAT = "hooked_bilinear.jobs/1"
_UNIT = re.compile(r"^[A-Za-z0-9_.-]+$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


class Store:
    """Paths and records of one output folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.shards = self.root / "shards"
        self.units = self.root / "units"
        self.index_path = self.root / "index.parquet"

    def create(self) -> None:
        for p in (self.root, self.shards, self.units):
            p.mkdir(parents=True, exist_ok=True)

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise JobError(f"{self.manifest_path} is not a readable job manifest ({e}); use another --out") from e

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.manifest_path, manifest)

    def shard_path(self, unit: str) -> Path:
        return self.shards / f"{unit}.safetensors"

    def record_path(self, unit: str) -> Path:
        return self.units / f"{unit}.json"

    def write_shard(self, unit: str, tensors: dict) -> int:
        """Serialise the unit's tensors (contiguous, on CPU) and write them atomically; returns bytes."""
        from safetensors.torch import save

        data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
        atomic_write(self.shard_path(unit), data)
        return len(data)

    def write_shard_file(self, unit: str, write) -> int:
        """Let ``write(tmp_path)`` write the unit's own file format, then fsync and rename; returns bytes."""
        path = self.shard_path(unit)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path.stat().st_size

    def write_record(self, unit: str, record: dict) -> None:
        write_json(self.record_path(unit), dict(record, unit=unit))

    def records(self) -> dict[str, dict]:
        """Every readable unit record by unit id (temporary files and unreadable records skipped)."""
        out = {}
        if not self.units.is_dir():
            return out
        for p in self.units.glob("*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            out[p.stem] = rec
        return out

    def finished(self, records: dict[str, dict] | None = None) -> set[str]:
        """Units whose record says ok and whose shard exists with the recorded size."""
        records = self.records() if records is None else records
        done = set()
        for unit, rec in records.items():
            if rec.get("status") != "ok":
                continue
            p = self.shard_path(unit)
            if p.exists() and p.stat().st_size == rec.get("bytes"):
                done.add(unit)
        return done

    def load_shard(self, unit: str) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.shard_path(unit)))


def check_unit_ids(units: list[str]) -> None:
    """Unit ids become file names: refuse anything but [A-Za-z0-9_.-] and duplicates."""
    bad = [u for u in units if not _UNIT.match(u)]
    if bad:
        raise JobError(f"unit id {bad[0]!r} has characters outside [A-Za-z0-9_.-]")
    if len(set(units)) != len(units):
        raise JobError(f"{len(units) - len(set(units))} duplicate unit ids")
