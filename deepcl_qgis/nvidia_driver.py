"""The CUDA version the NVIDIA driver supports, as ``nvidia-smi`` reports it: it chooses the PyTorch
build to install, and the diagnostics show it. nvidia-smi can take seconds (a GPU waking from power
saving) or hang (a driver in trouble), so it runs in a QProcess and the answer comes as a signal:
QGIS's main thread never waits for it."""
from __future__ import annotations

import re
import shutil
from typing import Optional, Tuple

from qgis.PyQt.QtCore import QObject, QProcess, QTimer, pyqtSignal

NVIDIA_SMI_TIMEOUT_S = 20.0


def cuda_version_in(report: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of the "CUDA Version" in nvidia-smi's report, e.g. (12, 4); None without one."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", report)
    return (int(match.group(1)), int(match.group(2))) if match else None


class DriverQuery(QObject):
    """Asks nvidia-smi once; ``answered`` carries (major, minor), or None where there is no NVIDIA
    driver, the program fails, or it has not answered within ``timeout_s``. Connect before
    :meth:`start`: without nvidia-smi the answer comes at once."""

    answered = pyqtSignal(object)

    def __init__(self, parent: Optional[QObject] = None, program: Optional[str] = None,
                 timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> None:
        super().__init__(parent)
        self.program = program
        self.timeout_s = timeout_s
        self.answer: Optional[Tuple[int, int]] = None
        self.done = False
        self.process: Optional[QProcess] = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._on_timeout)

    def start(self) -> None:
        program = self.program or shutil.which("nvidia-smi")
        if not program:
            self._answer(None)
            return
        self.process = QProcess(self)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self.timer.start(int(self.timeout_s * 1000))
        self.process.start(program, [])

    def _on_finished(self, _exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        report = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self._answer(cuda_version_in(report) if exit_status == QProcess.NormalExit else None)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:  # other errors are followed by finished
            self._answer(None)

    def _on_timeout(self) -> None:
        self._answer(None)
        self.process.kill()  # its finished signal then finds the question answered

    def _answer(self, version: Optional[Tuple[int, int]]) -> None:
        if self.done:
            return
        self.done, self.answer = True, version
        self.timer.stop()
        self.answered.emit(version)
