"""A child process's own peak resident memory. ``os.wait4`` on a child the benchmark starts itself
reports at least the benchmark's own peak: Linux carries the memory high-water mark a process had
when it calls exec into the exec'd program's ``ru_maxrss``, and Python starts children with vfork,
so that mark is the parent's. The child is therefore started by a small launcher, whose own
memory (a bare Python, about 10 MB) is the floor instead; the launcher waits for it and writes
its ``ru_maxrss`` and ``ru_minflt`` to a file."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Tuple

_LAUNCHER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); "
             "_, status, usage = os.wait4(child.pid, 0); "
             "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {usage.ru_minflt}'); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def run_measuring_peak(command: List[str], **popen: Any) -> Tuple[int, float, int]:
    """Run ``command`` (``popen``: subprocess.Popen's keywords, e.g. stdout) to its end; returns its
    exit status, its own peak resident memory in MB and the pages it faulted in (minor faults)."""
    with tempfile.TemporaryDirectory(prefix="peak-rss-") as folder:
        report = Path(folder) / "usage"
        launcher = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(report), *command], **popen)
        _, status, _ = os.wait4(launcher.pid, 0)
        peak_kb, faults = map(int, report.read_text().split()) if report.exists() else (0, 0)  # kB on Linux
    return os.waitstatus_to_exitcode(status), peak_kb / 1024, faults
