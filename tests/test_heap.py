"""Freed memory kept for reuse while the network runs (glibc), and handed back afterwards. The
blocks go through glibc's malloc and free as torch's CPU tensors do (numpy asks the kernel for huge
pages on large arrays, which hides the page faults measured here)."""
import ctypes
import resource
from pathlib import Path

import pytest

from deepcl_core import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="glibc's malloc only")

BLOCK = 64 * 1024 * 1024  # larger than any block glibc keeps by default (32 MiB at most)


def _touched_block(size: int = BLOCK) -> int:
    """A block from malloc, written over (so that its pages are really there); its address."""
    heap._LIBC.malloc.restype = ctypes.c_void_p
    address = heap._LIBC.malloc(ctypes.c_size_t(size))
    assert address
    ctypes.memset(address, 1, size)
    return address


def _free(address: int) -> None:
    heap._LIBC.free(ctypes.c_void_p(address))


def _faults_of_reuse(rounds: int = 4) -> int:
    """Minor page faults of allocating, touching and freeing a large block again and again (the
    first round, which may grow the heap, not counted)."""
    _free(_touched_block())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        _free(_touched_block())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def test_freed_blocks_are_reused_without_page_faults_inside_only():
    pages = 4 * BLOCK // resource.getpagesize()
    assert _faults_of_reuse() > pages // 2  # glibc's default: every block faulted in anew
    with heap.freed_memory_kept():
        assert _faults_of_reuse() < pages // 100
    assert _faults_of_reuse() > pages // 2  # defaults back


def test_memory_kept_is_handed_back_when_the_last_user_leaves():
    resident = _resident_bytes()
    with heap.freed_memory_kept():
        with heap.freed_memory_kept():  # nested (e.g. evaluation running detection): one setting
            _free(_touched_block(4 * BLOCK))
        assert _resident_bytes() - resident > 3 * BLOCK  # freed, but still with the process
        assert _faults_of_reuse() < 4 * BLOCK // resource.getpagesize() // 100  # the outer one still holds
    assert _resident_bytes() - resident < BLOCK
