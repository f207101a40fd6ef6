"""Keep freed CPU memory in the process for reuse, as PyTorch's caching allocators do on GPU.

Why: by default glibc hands large freed blocks back to the OS. Every new tensor then sits on fresh
pages, and the kernel faults and zeroes each 4 KiB page on first touch. `run_with_cache` allocates a
new tensor per cached hook on every call, so on a 2-core VM it paid ~10 ms of page faults per call
(2 layers, d_model 256, batch 8x128, ~66 MiB cached): 1.47x a plain module at 2 threads, wall time.
With freed memory kept, the next call reuses the same pages, with no faults.

What: on the first `run_with_cache` the library calls glibc's `mallopt` once:
`M_MMAP_THRESHOLD` = 32 MiB (blocks up to 32 MiB come from the heap, not from their own mapping) and
`M_TRIM_THRESHOLD` = 1 GiB (up to 1 GiB of free heap top is kept, not given back). glibc itself moves
the mmap threshold up to 32 MiB as a process frees big blocks; the trim threshold is what changes.
It is process-wide: resident memory after a call stays at its peak instead of falling back. Peak memory
does not grow. `release_freed_memory()` gives the kept memory back (`malloc_trim`).

Opt out with `HOOKED_BILINEAR_KEEP_FREED_MEMORY=0`. Glibc malloc settings that you made yourself
(`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_MMAP_MAX_`, or
`glibc.malloc.*` in `GLIBC_TUNABLES`) are left alone. Elsewhere than glibc (macOS, Windows, musl) it is
a no-op. This module imports neither torch nor anything heavy.

Example:
    >>> from hooked_bilinear import allocator
    >>> state = allocator.keep_freed_memory()  # what run_with_cache does on its first call
    >>> isinstance(state.active, bool)
    True
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Mapping, Optional

from hooked_bilinear.errors import ConfigError

ENV = "HOOKED_BILINEAR_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
_USER_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")


@dataclass(frozen=True)
class AllocatorState:
    """Whether the library keeps freed memory in this process, and why (or why not)."""

    active: bool
    reason: str


_lock = threading.Lock()
_state: Optional[AllocatorState] = None


def keep_freed_memory() -> AllocatorState:
    """Ask glibc, once per process, to keep freed memory for reuse; a no-op after the first call.

    Returns:
        The state: `active` True when glibc now keeps freed memory, with the reason either way.

    Raises:
        ConfigError: `HOOKED_BILINEAR_KEEP_FREED_MEMORY` is set to something other than 0/1
            (or false/true, no/yes, off/on). Nothing is changed then.
    """
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is None:
            _state = _apply(os.environ, _libc())
    return _state


def state() -> Optional[AllocatorState]:
    """The state `keep_freed_memory` left, or None before its first call (nothing changed yet)."""
    return _state


def release_freed_memory() -> bool:
    """Give kept free memory back to the OS now (glibc `malloc_trim(0)`).

    Returns:
        True when glibc released some memory; False when there was none or this is not glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def _libc():
    """The C library this process runs on when it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # Windows has no dlopen(NULL)
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def _apply(environ: Mapping[str, str], libc) -> AllocatorState:
    """The decision and the two mallopt calls, on an explicit environment and libc (None: not glibc)."""
    raw = environ.get(ENV, "")
    value = raw.strip().lower()
    if value not in _OFF + _ON:
        raise ConfigError(f"{ENV}={raw!r}: expected 0 or 1 (also false/true, no/yes, off/on)")
    if value in _OFF:
        return AllocatorState(False, f"off: {ENV}={raw}")
    if libc is None:
        return AllocatorState(False, "unsupported: not glibc; the C library's defaults are kept")
    mine = [v for v in _USER_VARS if v in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        mine.append("GLIBC_TUNABLES")
    if mine:
        return AllocatorState(False, f"left alone: glibc malloc is configured by {', '.join(mine)}")
    try:
        if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            return AllocatorState(False, f"failed: mallopt(M_MMAP_THRESHOLD, {MMAP_THRESHOLD}) returned 0; "
                                         "glibc's defaults are kept")
        if not libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            return AllocatorState(False, f"failed: mallopt(M_TRIM_THRESHOLD, {TRIM_THRESHOLD}) returned 0 "
                                         f"(the mmap threshold was set to {MMAP_THRESHOLD})")
    except (AttributeError, OSError, ctypes.ArgumentError) as exc:
        return AllocatorState(False, f"failed: mallopt unavailable ({type(exc).__name__}: {exc}); defaults kept")
    return AllocatorState(True, f"active: glibc mallopt M_MMAP_THRESHOLD={MMAP_THRESHOLD}, "
                                f"M_TRIM_THRESHOLD={TRIM_THRESHOLD}; opt out with {ENV}=0")


__all__ = ["ENV", "AllocatorState", "keep_freed_memory", "release_freed_memory", "state"]
