"""A progress reporter for terminals: a bar on a TTY; otherwise (logs, CI) a line every 10 %, and a
line for each message that comes without moving the bar: news between steps (an epoch's
validation F1, a new phase, a batch size halved), not a step."""
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
        self.last = (-1.0, "")  # fraction and message of the last call

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
        news = fraction == self.last[0] and message != self.last[1]
        self.last = (fraction, message)
        if decile > self.last_decile or fraction == 0.0 or news:
            self.last_decile = decile
            self.stream.write(f"{self.label}: {fraction:6.1%} {elapsed:7.1f}s {message}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
