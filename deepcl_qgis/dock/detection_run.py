"""One run of ``deepcl:detectchanges`` as a background task of the QGIS task manager, so the
panel shares the toolbox's code path and QGIS never freezes."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                       QgsProcessingFeedback, QgsProject)
from qgis.PyQt.QtCore import QObject, pyqtSignal

ALGORITHM_ID = "deepcl:detectchanges"


class RunFeedback(QgsProcessingFeedback):
    """Keeps the errors and warnings of the run; ``message`` is emitted (from the worker thread;
    Qt queues it to the panel) for each progress text."""

    message = pyqtSignal(str)

    def __init__(self) -> None:
        super().__init__()
        self.errors: List[str] = []
        self.warnings: List[str] = []

    def setProgressText(self, text: str) -> None:  # noqa: N802 (Qt API)
        super().setProgressText(text)
        self.message.emit(text)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        super().reportError(error, fatalError)
        self.errors.append(error)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        super().pushWarning(warning)
        self.warnings.append(warning)


class DetectionRun(QObject):
    """Starts the task; ``progress(percent)``, ``message(text)`` while it runs; ``finished(ok,
    results, error, seconds)`` once, in the main thread."""

    progress = pyqtSignal(float)
    message = pyqtSignal(str)
    finished = pyqtSignal(bool, dict, str, float)

    def __init__(self, parameters: Dict[str, Any], project: Optional[QgsProject] = None,
                 parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.parameters = parameters
        # The task holds C++ references only: Python keeps context and feedback alive until it ends.
        self.context = QgsProcessingContext()
        self.context.setProject(project or QgsProject.instance())
        self.feedback = RunFeedback()
        self.task: Optional[QgsProcessingAlgRunnerTask] = None
        self.started = 0.0

    def problem(self) -> str:
        """What is wrong with the parameters, in the algorithm's own words; '' when they are fine."""
        algorithm = self._algorithm()
        if algorithm is None:
            return "The DeepCL Processing provider is not loaded; reinstall or re-enable the plugin."
        ok, message = algorithm.checkParameterValues(self.parameters, self.context)
        return "" if ok else message

    def start(self) -> None:
        self.feedback.progressChanged.connect(self.progress)
        self.feedback.message.connect(self.message)
        self.task = QgsProcessingAlgRunnerTask(self._algorithm(), self.parameters, self.context, self.feedback)
        self.task.executed.connect(self._on_executed)
        self.started = time.monotonic()
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        # Cancelling the feedback stops the engine at its next batch check.
        self.feedback.cancel()
        if self.task is not None:
            self.task.cancel()

    def _algorithm(self) -> Any:
        return QgsApplication.processingRegistry().algorithmById(ALGORITHM_ID)

    def _on_executed(self, successful: bool, results: Dict[str, Any]) -> None:
        seconds = time.monotonic() - self.started
        if self.feedback.isCanceled():
            self.finished.emit(False, {}, "", seconds)
        elif successful:
            self.finished.emit(True, dict(results), "", seconds)
        else:
            error = self.feedback.errors[-1] if self.feedback.errors else "The detection failed; see the log."
            self.finished.emit(False, {}, error, seconds)
        self.task = None
