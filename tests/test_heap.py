"""Freed memory kept for reuse while the network runs (glibc), and handed back afterwards, in a
plain process and in one holding QGIS, as the plugin's does. Each check runs in a fresh
interpreter: the setting is process-wide, and this test process holds QGIS and threads of other
tests. The blocks go through glibc's malloc and free as torch's CPU tensors do (numpy asks the
kernel for huge pages on large arrays, which would hide the page faults counted here)."""
import subprocess
import sys
import textwrap

import pytest

from deepcl_core import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="glibc's malloc only")

CHECKS = textwrap.dedent("""
    import ctypes, resource, sys
    from pathlib import Path
    if sys.argv[1] == "qgis":
        import qgis.core  # noqa: F401  (what the plugin's process holds)
    from deepcl_core import heap

    BLOCK = 64 * 1024 * 1024  # larger than any block glibc keeps by default (32 MiB at most)
    PAGES = 4 * BLOCK // resource.getpagesize()
    heap._LIBC.malloc.restype = ctypes.c_void_p

    def cycle(size=BLOCK):
        address = heap._LIBC.malloc(ctypes.c_size_t(size))
        assert address
        ctypes.memset(address, 1, size)  # the pages are really there
        heap._LIBC.free(ctypes.c_void_p(address))

    def faults_of_reuse():
        cycle()  # may grow the heap: not counted
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            cycle()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def resident():
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

    print("default", faults_of_reuse() / PAGES)
    with heap.freed_memory_kept():
        print("inside", faults_of_reuse() / PAGES)
        start = resident()
        with heap.freed_memory_kept():  # nested (e.g. evaluation running detection): one setting
            cycle(4 * BLOCK)
        print("kept", (resident() - start) / BLOCK)
        print("outer", faults_of_reuse() / PAGES)  # the outer one still holds
    print("after", faults_of_reuse() / PAGES)
    print("returned", (resident() - start) / BLOCK)
""")


def _run_checks(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHECKS, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {name: float(value) for name, value in (line.split() for line in done.stdout.splitlines())}


@pytest.mark.parametrize("process", ["plain", "qgis"])
def test_freed_blocks_are_reused_inside_only_and_handed_back_after(process):
    shares = _run_checks(process)  # faults as a share of the pages touched; blocks of 64 MiB
    assert shares["default"] > 0.5  # glibc's default: every block faulted in anew
    assert shares["inside"] < 0.01 and shares["outer"] < 0.01
    assert shares["kept"] > 2.5  # 256 MiB freed (64 of them already resident before), still with the process
    assert shares["after"] > 0.5  # defaults back when the last user left
    assert shares["returned"] < 1  # and the memory kept handed back

