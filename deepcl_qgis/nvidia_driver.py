"""The CUDA version the NVIDIA driver supports, as ``nvidia-smi`` reports it: it chooses the PyTorch
build to install, and the diagnostics show it. nvidia-smi can take seconds (a GPU waking from power
saving) or hang (a driver in trouble, sometimes beyond a kill), so it runs from a daemon thread that
QGIS never waits for, not even when it closes, and the answer comes as a signal in the main thread."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from typing import Optional, Tuple

from qgis.PyQt.QtCore import QObject, QTimer, pyqtSignal

NVIDIA_SMI_TIMEOUT_S = 20.0
_POLL_MS = 50  # how often the main thread looks for the answer: nvidia-smi takes 0.1 s or more


def cuda_version_in(report: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of the "CUDA Version" in nvidia-smi's report, e.g. (12, 4); None without one."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", report)
    return (int(match.group(1)), int(match.group(2))) if match else None


class _Asking:
    """One question to nvidia-smi, asked in its own thread; holds no Qt object, so the thread never
    touches one (the dialog that asked may be gone when it ends)."""

    def __init__(self, program: Optional[str], timeout_s: float) -> None:
        self.done = threading.Event()
        self.answer: Optional[Tuple[int, int]] = None
        self.process: Optional[subprocess.Popen] = None
        threading.Thread(target=self._ask, args=(program, timeout_s), name="deepcl-nvidia-smi",
                         daemon=True).start()

    def _ask(self, program: Optional[str], timeout_s: float) -> None:
        try:
            if program:
                self.process = subprocess.Popen([program], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                stdin=subprocess.DEVNULL, text=True, errors="replace")
                report, _ = self.process.communicate(timeout=timeout_s)
                if self.process.returncode == 0:
                    self.answer = cuda_version_in(report)
        except subprocess.TimeoutExpired:
            self.done.set()  # answered (None) before the kill, which a driver in trouble may hold up
            self.process.kill()
            self.process.communicate()
        except OSError:
            pass  # not startable: no answer but None
        finally:
            self.done.set()


class DriverQuery(QObject):
    """Asks nvidia-smi once; ``answered`` carries (major, minor), or None where there is no NVIDIA
    driver, the program fails, or it has not answered within ``timeout_s`` (and is killed). The
    answer always comes through the event loop, never within :meth:`start`."""

    answered = pyqtSignal(object)

    def __init__(self, parent: Optional[QObject] = None, program: Optional[str] = None,
                 timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> None:
        super().__init__(parent)
        self.program = program
        self.timeout_s = timeout_s
        self.asking: Optional[_Asking] = None
        self.timer = QTimer(self)
        self.timer.setInterval(_POLL_MS)
        self.timer.timeout.connect(self._look)

    def start(self) -> None:
        self.asking = _Asking(self.program or shutil.which("nvidia-smi"), self.timeout_s)
        self.timer.start()

    def stop(self) -> None:
        """No answer is wanted any more (the dialog closed); nvidia-smi ends on its own."""
        self.timer.stop()

    def _look(self) -> None:
        if self.asking.done.is_set():
            self.timer.stop()
            self.answered.emit(self.asking.answer)
