"""The shared runner: manifest checks, each rank's share, crash-safe unit results, progress, index.

    code = run(job, out_dir)      # 0 when every unit is finished, 1 when some failed

The same call runs in one process or in each of the ``torchrun`` processes. Rank r takes the units
``units[r::world]`` that have no finished record yet; a unit that raises is recorded as failed
(with its error) and the job goes on; at the end rank 0 writes the index and every rank returns the
same exit code. Rerunning into the same folder (after a crash, a ``kill -9``, or failures) skips the
finished units and retries the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback

from hooked_bilinear.errors import JobError
from hooked_bilinear.jobs.base import Job
from hooked_bilinear.jobs.dist import Dist, pick_device
from hooked_bilinear.jobs.store import FORMAT, Store, check_unit_ids


def _units_digest(units: list[str]) -> str:
    return hashlib.sha256("\n".join(units).encode()).hexdigest()[:16]


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b), key=str)
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in keys if a.get(k) != b.get(k))


def prepare(store: Store, job: Job, units: list[str], world: int) -> dict:
    """Create the manifest, or check that the folder's manifest is this job at this world size."""
    manifest = {"format": FORMAT, "kind": job.kind, "params": job.params(), "world_size": world,
                "n_units": len(units), "units_digest": _units_digest(units)}
    old = store.read_manifest()
    if old is None:
        if store.root.exists() and any(store.root.iterdir()):
            raise JobError(f"--out {store.root} is a non-empty folder without a job manifest; use an empty or new folder")
        store.create()
        store.write_manifest(manifest)
        return manifest
    same = {k: old.get(k) for k in ("format", "kind", "params", "n_units", "units_digest")}
    want = {k: manifest[k] for k in same}
    if same != want:
        flat_old = dict(same, **(old.get("params") or {}))
        flat_new = dict(want, **manifest["params"])
        flat_old.pop("params", None)
        flat_new.pop("params", None)
        raise JobError(f"--out {store.root} holds the manifest of another job ({_diff(flat_old, flat_new)}); "
                       "use another --out folder, or delete that one to start over")
    if old.get("world_size") != world:
        raise JobError(f"--out {store.root} was started with world size {old.get('world_size')} but this run has "
                       f"{world}; resume with the same number of processes (torchrun --nproc-per-node "
                       f"{old.get('world_size')}), or start a new --out folder")
    store.create()
    return old


def run(job: Job, out: str, device: str = "auto", progress: bool = True, throttle: float = 0.0) -> int:
    """Run ``job`` into the folder ``out``; returns 0 if every unit is finished, else 1.

    Args:
        job: a ``Job`` (e.g. ``SpectraJob``); ``setup`` is called here.
        out: the output folder (created; a rerun resumes it).
        device: "auto" (this rank's GPU if CUDA is available, else CPU), or a torch device string.
        progress: rank 0 shows a bar over the units of all ranks.
        throttle: seconds to sleep after each unit (to share a machine, or to test a kill).

    Raises:
        JobError: bad input (from ``setup``) or an output folder this job cannot use; raised on
            every rank, before any unit runs.
    """
    dev = pick_device(device)
    with Dist(dev) as ctx:
        job.setup(dev)
        units = job.units()
        check_unit_ids(units)
        store = Store(out)
        state = None
        if ctx.rank == 0:
            try:
                prepare(store, job, units, ctx.world)
                state = ("ok", sorted(store.finished()))
            except JobError as e:
                state = ("error", str(e))
        state = ctx.broadcast(state)
        if state[0] == "error":
            raise JobError(state[1])
        finished = set(state[1])
        pending = [u for u in units if u not in finished]
        todo = [u for u in units[ctx.rank :: ctx.world] if u not in finished]
        ctx.barrier()
        bar = None
        if ctx.rank == 0:
            from hooked_bilinear.progress import tqdm

            bar = tqdm(total=len(units), initial=len(finished), desc=f"{job.kind} ({ctx.world} ranks)",
                       unit="unit", disable=not progress)
        for unit in todo:
            t0 = time.perf_counter()
            try:
                result, meta = job.run_unit(unit)
                nbytes = store.write_shard_file(unit, result) if callable(result) else store.write_shard(unit, result)
                store.write_record(unit, {"status": "ok", "bytes": nbytes, "meta": meta, "rank": ctx.rank,
                                          "seconds": round(time.perf_counter() - t0, 6)})
            except Exception as e:  # recorded, and the job goes on; BaseException (kill, ^C) is not caught
                store.write_record(unit, {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc(limit=6), "rank": ctx.rank})
            total = ctx.add_done(1)
            if bar is not None:
                bar.update(min(total, len(pending)) - (bar.n - len(finished)))
            if throttle:
                time.sleep(throttle)
        if bar is not None and ctx.store is not None:
            while (total := ctx.add_done(0)) < len(pending):
                bar.update(total - (bar.n - len(finished)))
                time.sleep(0.1)
        ctx.barrier()
        code = None
        if ctx.rank == 0:
            if bar is not None:
                bar.update(len(units) - bar.n)
                bar.close()
            code = write_index(store, units)
        return int(ctx.broadcast(code))


def write_index(store: Store, units: list[str]) -> int:
    """Write DIR/index.parquet (one row per unit) and the summary in the manifest; 0 iff all finished."""
    import pandas as pd

    records = store.records()
    finished = store.finished(records)
    rows = []
    for u in units:
        rec = records.get(u, {})
        status = "ok" if u in finished else ("failed" if rec.get("status") == "failed" else "missing")
        rows.append({"unit": u, "status": status, "error": rec.get("error"), "rank": rec.get("rank"),
                     "seconds": rec.get("seconds"), "bytes": rec.get("bytes"),
                     "meta": json.dumps(rec.get("meta"), sort_keys=True) if status == "ok" else None})
    df = pd.DataFrame(rows)
    tmp = store.index_path.with_name(".index.parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(store.index_path)
    manifest = store.read_manifest() or {}
    counts = df["status"].value_counts().to_dict()
    manifest["status"] = {s: int(counts.get(s, 0)) for s in ("ok", "failed", "missing")}
    store.write_manifest(manifest)
    return 0 if manifest["status"]["ok"] == len(units) else 1
