"""Keep freed memory in the process while the network runs, instead of handing it back to the system.

glibc's malloc serves large blocks (most of a 768² tile's activations are tens of megabytes) with
fresh pages from the kernel and unmaps them when they are freed, so every tile faults its
activations in again, page by page, zero-filled. On the 2-core development machine detection on a
2,048² pair (9 tiles) faulted in 0.51 million pages instead of 0.13 million and took 2.92 s instead
of 2.52 s; the network alone 2.54 s instead of 2.02 s (``python -m benchmarks.memory_levers``,
docs/memory_levers.md).
Inside :func:`freed_memory_kept` large blocks come from the heap and the heap is not trimmed, so the
next tile reuses the pages of the last. Afterwards glibc's default limits come back (its
self-adjusting mmap threshold stays fixed where it stood, as any mallopt call leaves it) and the
memory kept is returned. Elsewhere than glibc (Windows, macOS, musl) this does nothing. Inside
QGIS too: a failed run's datasets must not outlive GDAL there (``errors.releases_locals_on_error``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

LOG = logging.getLogger(__name__)

# mallopt parameters and glibc's defaults for them (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEPT_TRIM_THRESHOLD = 1 << 30  # only more free memory than this at the heap's top goes back

_lock = threading.Lock()
_users = 0  # runs inside the context now (the setting is the whole process's)


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not all(hasattr(libc, f) for f in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


_LIBC = _glibc()


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Within the block, freed memory stays with the process for reuse (see the module's docstring).
    Nested and concurrent uses share one setting, undone when the last one leaves."""
    global _users
    if _LIBC is None:
        yield
        return
    with _lock:
        if _users == 0 and not (_LIBC.mallopt(_M_MMAP_MAX, 0) and _LIBC.mallopt(_M_TRIM_THRESHOLD,
                                                                                _KEPT_TRIM_THRESHOLD)):
            LOG.debug("mallopt refused the settings; memory is handed back as usual")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
