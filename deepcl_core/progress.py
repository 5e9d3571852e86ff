"""A progress reporter for terminals: a bar on a TTY; otherwise (logs, CI) a line every 10 %, and a
line for each message that comes without moving the bar: news between steps (an epoch's
validation F1, a new phase, a batch size halved), not a step. On a TTY such news, and any message
longer than the bar shows, is written whole on a line of its own above the bar (the bar's next
step would overwrite it: the first message, naming the thresholds, was never seen there)."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, List, Optional, TextIO, Tuple

BAR_MESSAGE_WIDTH = 60  # at most; less on a narrow terminal, where a wrapped bar could not be drawn over
BAR_WITHOUT_MESSAGE = 49  # the bar's characters besides its label and message


class TerminalProgress:
    """Callable as ``progress(fraction, message)``."""

    def __init__(self, label: str, stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        self.interactive = self.stream.isatty()
        self.columns = _columns(self.stream)
        self.message_width = min(BAR_MESSAGE_WIDTH, max(0, self.columns - 1 - len(label) - BAR_WITHOUT_MESSAGE))
        self.started = time.perf_counter()
        self.last_decile = -1
        self.last = (-1.0, "")  # fraction and message of the last call
        self.bar = ""  # as last drawn
        self.bar_length = 0  # of the bar on the screen: 0 once a line has ended it
        self._log_streams: List[Tuple[logging.StreamHandler, Any]] = []

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.started
        news = fraction == self.last[0] and message != self.last[1]
        cut_news = message != self.last[1] and len(message) > self.message_width
        self.last = (fraction, message)
        if self.interactive:
            if message and (news or cut_news):
                self._above_the_bar(f"{self.label}: {message}\n")
            filled = int(fraction * 30)
            self.bar = (f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {elapsed:6.1f}s "
                        f"{message[:self.message_width]:<{self.message_width}}")[:self.columns - 1]
            self.bar_length = len(self.bar)
            self.stream.write(f"\r{self.bar}")
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self.last_decile or fraction == 0.0 or news:
            self.last_decile = decile
            self.stream.write(f"{self.label}: {fraction:6.1%} {elapsed:7.1f}s {message}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive and self.bar_length:  # a bar to end: a refusal before any step stays one line
            self.stream.write("\n")
            self.stream.flush()
            self.bar_length = 0

    def __enter__(self) -> "TerminalProgress":
        """For the run: on a TTY, log lines (warnings) written above the bar, which the bar's next
        step would overwrite (they were written after it, on its line)."""
        self._log_streams = [(handler, handler.setStream(self)) for handler in logging.getLogger().handlers
                             if self.interactive and isinstance(handler, logging.StreamHandler)
                             and handler.stream is self.stream]
        return self

    def __exit__(self, *_exception: Any) -> None:
        for handler, stream in self._log_streams:
            handler.setStream(stream)
        self.finish()

    def write(self, text: str) -> None:
        """A log handler's stream while the bar is shown: ``text`` above the bar, drawn again below it."""
        bar_shown = self.bar_length > 0
        self._above_the_bar(text)
        if bar_shown and text.endswith("\n"):
            self.stream.write(f"\r{self.bar}")
            self.bar_length = len(self.bar)
        self.stream.flush()

    def _above_the_bar(self, text: str) -> None:
        self.stream.write(f"\r{' ' * self.bar_length}\r{text}")
        self.bar_length = 0

    def flush(self) -> None:
        self.stream.flush()


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to; 120 where it says none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 120
    except (AttributeError, OSError, ValueError):
        return 120
