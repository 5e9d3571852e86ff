"""A progress reporter for terminals: a bar on a TTY, a line every 10 % otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class TerminalProgress:
    """Callable as ``progress(fraction, message)``."""

    def __init__(self, label: str, stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        self.interactive = self.stream.isatty()
        self.started = time.perf_counter()
        self.last_decile = -1

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.started
        if self.interactive:
            filled = int(fraction * 30)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} "
                              f"{elapsed:6.1f}s {message[:60]:<60}")
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self.last_decile or fraction == 0.0:
            self.last_decile = decile
            self.stream.write(f"{self.label}: {fraction:6.1%} {elapsed:7.1f}s {message}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
