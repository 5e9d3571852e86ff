"""A child process's own peak resident memory. ``os.wait4`` on a child the benchmark starts itself
reports at least the benchmark's own peak: Linux carries the memory high-water mark a process had
when it calls exec into the exec'd program's ``ru_maxrss``, and Python starts children with vfork,
so that mark is the parent's. The child is therefore started by a small launcher, whose own
memory (a bare Python, far below any run's) is the floor instead; the launcher waits for it and writes
its ``ru_maxrss`` and ``ru_minflt`` to a file."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

# Times the child itself too, so the launcher's own start (tens of ms) counts in no figure.
_LAUNCHER = ("import os, subprocess, sys, time; started = time.perf_counter(); "
             "child = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(child.pid, 0); "
             "open(sys.argv[1], 'w').write(f'{time.perf_counter() - started} {usage.ru_maxrss} {usage.ru_minflt}'); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


@dataclass
class ChildUsage:
    status: int  # exit status
    seconds: float
    peak_rss_mb: float
    minor_faults: int  # pages the child faulted in


def run_measuring_peak(command: List[str], **popen: Any) -> ChildUsage:
    """Run ``command`` (``popen``: subprocess.Popen's keywords, e.g. stdout) to its end, measured."""
    with tempfile.TemporaryDirectory(prefix="peak-rss-") as folder:
        report = Path(folder) / "usage"
        launcher = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(report), *command], **popen)
        _, status, _ = os.wait4(launcher.pid, 0)
        seconds, peak_kb, faults = report.read_text().split() if report.exists() else ("0", "0", "0")
    return ChildUsage(os.waitstatus_to_exitcode(status), float(seconds), int(peak_kb) / 1024, int(faults))
