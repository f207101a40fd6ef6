"""hooked_bilinear.allocator: glibc keeps freed memory after the first run_with_cache, the opt-out and the
user's own malloc settings are honoured, every failure degrades to glibc's defaults, and outputs are
bit-identical either way.

The decision is tested on fake C libraries (no process state changes); the effect is tested in fresh
subprocesses, reading resident memory (VmRSS) around a freed block, since the setting is process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hooked_bilinear import allocator
from hooked_bilinear.allocator import ENV, MMAP_THRESHOLD, TRIM_THRESHOLD, _apply
from hooked_bilinear.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GLIBC = allocator._libc() is not None
MiB = 1 << 20


class FakeLibc:
    """Records mallopt calls; `results` are the return values, in order."""

    def __init__(self, *results):
        self.calls, self.results = [], list(results) or [1, 1]

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.results[len(self.calls) - 1]


def test_sets_the_mmap_then_the_trim_threshold():
    libc = FakeLibc()
    state = _apply({}, libc)
    assert state.active and "active" in state.reason and ENV in state.reason
    assert libc.calls == [(-3, 32 * MiB), (-1, 1024 * MiB)]  # glibc's M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert (MMAP_THRESHOLD, TRIM_THRESHOLD) == (32 * MiB, 1024 * MiB)


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_opt_out_changes_nothing(value):
    libc = FakeLibc()
    state = _apply({ENV: value}, libc)
    assert not state.active and state.reason.startswith("off") and libc.calls == []


@pytest.mark.parametrize("value", ["1", "true", "On", ""])
def test_opt_in_values(value):
    assert _apply({ENV: value}, FakeLibc()).active


def test_a_bad_value_is_an_error_naming_it_and_changes_nothing():
    libc = FakeLibc()
    with pytest.raises(ConfigError, match=r"HOOKED_BILINEAR_KEEP_FREED_MEMORY='maybe'.*expected 0 or 1"):
        _apply({ENV: "maybe"}, libc)
    assert libc.calls == []


@pytest.mark.parametrize("env, name", [({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
                                       ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_"),
                                       ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES")])
def test_the_users_own_malloc_settings_are_left_alone(env, name):
    libc = FakeLibc()
    state = _apply(env, libc)
    assert not state.active and "left alone" in state.reason and name in state.reason and libc.calls == []


def test_other_tunables_do_not_count_as_malloc_settings():
    assert _apply({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, FakeLibc()).active


def test_not_glibc_is_a_no_op():
    state = _apply({}, None)
    assert not state.active and state.reason.startswith("unsupported")


def test_a_refused_first_call_stops_there():
    libc = FakeLibc(0, 1)
    state = _apply({}, libc)
    assert not state.active and "M_MMAP_THRESHOLD" in state.reason and len(libc.calls) == 1


def test_a_refused_second_call_is_reported():
    state = _apply({}, FakeLibc(1, 0))
    assert not state.active and "M_TRIM_THRESHOLD" in state.reason


def test_a_libc_without_mallopt_degrades_cleanly():
    state = _apply({}, object())
    assert not state.active and state.reason.startswith("failed") and "AttributeError" in state.reason


def test_keep_freed_memory_is_applied_once(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_libc", lambda: libc)
    monkeypatch.delenv(ENV, raising=False)
    for var in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    assert allocator.state() is None
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first is allocator.state()
    assert first.active and len(libc.calls) == 2


def test_run_with_cache_applies_it(monkeypatch, model, tokens):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_libc", lambda: FakeLibc())
    monkeypatch.delenv(ENV, raising=False)
    for var in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    model(tokens)
    assert allocator.state() is None  # a plain forward leaves malloc alone
    model.run_with_cache(tokens)
    assert allocator.state() is not None and allocator.state().active


def test_a_bad_value_makes_run_with_cache_raise(monkeypatch, model, tokens):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv(ENV, "2")
    with pytest.raises(ConfigError, match="'2'"):
        model.run_with_cache(tokens)
    assert allocator.state() is None
    assert not any(hp.fwd_hooks for hp in model.hook_points())


# ---- the real effect, in fresh processes ----------------------------------------------------------

_RSS = """
import ctypes, json, sys
from hooked_bilinear import allocator

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

state = allocator.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 24 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # touch every page
before = rss()
libc.free(block)
after_free = rss()
released = allocator.release_freed_memory()
print(json.dumps({"active": state.active, "reason": state.reason, "freed": before - after_free,
                  "released": released, "after_trim": before - rss(), "size": size}))
"""


def _run(script: str, **env) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in (ENV, "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                                                               "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}
    full.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_freed_memory_stays_mapped_and_release_gives_it_back():
    r = _run(_RSS)
    assert r["active"], r["reason"]
    assert r["freed"] < 2 * MiB, f"free() gave back {r['freed'] / MiB:.1f} MiB of a {r['size'] / MiB:.0f} MiB block"
    assert r["released"] and r["after_trim"] > r["size"] * 0.8


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("env", [{ENV: "0"}, {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_glibc_defaults_give_freed_memory_back(env):
    r = _run(_RSS, **env)
    assert not r["active"]
    assert r["freed"] > r["size"] * 0.8, f"free() gave back only {r['freed'] / MiB:.1f} MiB"


_MODEL = """
import json, os, torch
from hooked_bilinear import HookedBilinearConfig, HookedBilinearTransformer, allocator

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

def outputs():
    logits, cache = model.run_with_cache(tokens)
    return {"logits": logits, **cache}

torch.set_num_threads(1)
cfg = HookedBilinearConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=200, n_ctx=128,
                           normalization_type="LN", seed=0)
model = HookedBilinearTransformer(cfg).eval()
tokens = torch.randint(0, 200, (16, 128), generator=torch.Generator().manual_seed(0))
result = {"untouched": allocator.state() is None}
with torch.no_grad():
    os.environ["HOOKED_BILINEAR_KEEP_FREED_MEMORY"] = "0"  # first glibc's defaults ...
    off = outputs()
    result["off"] = allocator.state().reason
    allocator._state = None  # ... then what users get
    os.environ["HOOKED_BILINEAR_KEEP_FREED_MEMORY"] = "1"
    on = outputs()
    result["on"] = allocator.state().reason
    result["active"] = allocator.state().active
    result["identical"] = sorted(off) == sorted(on) and all(off[k].equal(on[k]) for k in off)
    result["n"] = len(on)
    del on, off
    out = outputs()
    result["cached"] = sum({v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in out.values()}.values())
    before = rss()
    del out  # logits and cache
    result["freed"] = before - rss()
    before = rss()
    allocator.release_freed_memory()
    result["trimmed"] = before - rss()
print(json.dumps(result))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_run_with_cache_keeps_the_cache_pages_and_outputs_are_bit_identical():
    r = _run(_MODEL)
    assert r["untouched"] and r["off"].startswith("off") and r["active"], r
    assert r["identical"] and r["n"] > 20
    assert r["cached"] > 16 * MiB
    assert r["freed"] < r["cached"] * 0.1, f"{r['freed'] / MiB:.1f} of {r['cached'] / MiB:.1f} MiB went back"
    # the pages were kept, not leaked: malloc_trim gives most of them back
    assert r["trimmed"] > r["cached"] * 0.5, f"malloc_trim gave back only {r['trimmed'] / MiB:.1f} MiB"
