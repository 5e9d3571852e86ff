"""Re-classification at a new threshold as a small background task (a large confidence map
takes seconds), with the result handed back in the main thread."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsTask

from ..engine import core_module
from .reclassify import ChangeCounts, reclassify

Done = Callable[[Optional[ChangeCounts], Path, str], None]


class ReclassifyTask(QgsTask):
    """Writes ``change`` from ``confidence`` at ``threshold``; then calls ``done(counts, change,
    error)`` (counts None on failure or cancel)."""

    def __init__(self, confidence: Path, change: Path, threshold: float, done: Done) -> None:
        super().__init__(f"DeepCL: change map at threshold {threshold:g}", QgsTask.CanCancel)
        self.confidence, self.change, self.threshold = confidence, change, threshold
        self.done = done
        self.counts: Optional[ChangeCounts] = None
        self.error = ""

    def run(self) -> bool:
        try:
            self.counts = reclassify(self.confidence, self.change, self.threshold, cancel=self.isCanceled)
        except core_module("errors").Cancelled:
            return False
        except Exception as exc:  # any failure is reported in the panel, never a crash of the task
            self.error = f"The change map could not be updated: {exc}"
            return False
        return not self.isCanceled()

    def finished(self, result: bool) -> None:
        if not result and self.counts is not None:
            self.change.unlink(missing_ok=True)  # complete, but cancelled: no one will show it
        self.done(self.counts if result else None, self.change, self.error)
