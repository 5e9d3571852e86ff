"""Installing PyTorch (or any pip requirement) into the plugin's own package folder.

pip runs in a separate process (QProcess) so QGIS stays responsive and its output can be shown
line by line. The build is chosen from the machine: an NVIDIA driver (``nvidia_driver``) → a CUDA
wheel index that the driver supports, else the CPU index (a bare ``torch`` from PyPI pulls
gigabytes of CUDA libraries even where no GPU exists)."""
from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, pyqtSignal

from .dependencies import add_owned_packages_to_path, owned_packages_folder, python_executable

TORCH_INDEX = "https://download.pytorch.org/whl/"
# (lowest driver CUDA version, wheel index tag), newest first: a driver runs any older CUDA build.
CUDA_BUILDS = [((12, 8), "cu128"), ((12, 6), "cu126"), ((11, 8), "cu118")]
# How long Stop waits for the killed pip to end: milliseconds in practice; this bounds a stuck one.
KILL_WAIT_MS = 3000


@dataclass
class InstallPlan:
    """What pip installs, from where, into which folder."""

    target: Path
    requirements: List[str] = field(default_factory=lambda: ["torch"])
    index_options: List[str] = field(default_factory=list)
    build: str = "CPU"  # in words, for the dialog
    python: str = ""

    def arguments(self) -> List[str]:
        """pip's arguments after the Python executable."""
        return ["-m", "pip", "install", "--upgrade", "--no-input", "--disable-pip-version-check",
                "--target", str(self.target), *self.index_options, *self.requirements]

    def command_line(self) -> str:
        return " ".join([self.python or python_executable(), *self.arguments()])


def torch_index(driver_cuda: Optional[tuple]) -> tuple:
    """(build in words, pip index options) for the machine's CUDA driver version or None."""
    for lowest, tag in CUDA_BUILDS:
        if driver_cuda is not None and tuple(driver_cuda) >= lowest:
            return (f"CUDA {lowest[0]}.{lowest[1]} (NVIDIA driver supports CUDA "
                    f"{driver_cuda[0]}.{driver_cuda[1]})", ["--index-url", TORCH_INDEX + tag])
    return "CPU", ["--index-url", TORCH_INDEX + "cpu"]


def torch_plan(driver_cuda: Optional[tuple], target: Optional[Path] = None) -> InstallPlan:
    """The plan for installing PyTorch here: a CUDA build the NVIDIA driver supports
    (``driver_cuda``, as :class:`nvidia_driver.DriverQuery` answers), else the CPU build."""
    build, options = torch_index(driver_cuda)
    return InstallPlan(target or owned_packages_folder(), ["torch"], options, build, python_executable())


class PipInstaller(QObject):
    """Runs one :class:`InstallPlan` with pip in a QProcess; ``output`` carries each line as it
    comes, ``finished(ok, message)`` the result in words."""

    output = pyqtSignal(str)
    finished = pyqtSignal(bool, str)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.process: Optional[QProcess] = None
        self.plan: Optional[InstallPlan] = None
        self.scratch: Optional[Path] = None  # pip's temporary folder while it runs
        self._tail: List[str] = []

    def start(self, plan: InstallPlan) -> None:
        plan.target.mkdir(parents=True, exist_ok=True)
        self.plan, self._tail = plan, []
        # pip's temporary files (a whole unpacked torch) go into a folder of the
        # plugin's, removed when pip ends however it ends: a killed pip leaves its own behind.
        self.scratch = Path(tempfile.mkdtemp(prefix="deepcl-pip-"))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.setProcessEnvironment(_pip_environment(self.scratch))
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self.output.emit(f"$ {plan.command_line()}")
        self.process.start(plan.python or python_executable(), plan.arguments())

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

    def cancel(self) -> None:
        """Stop pip, killing it: on SIGTERM Python ends without cleaning up either, and Windows
        console programs ignore a polite close. The short wait lets ``finished`` (and the removal
        of pip's files) come before the caller goes on, e.g. to delete a closed dialog."""
        if self.is_running():
            self.process.kill()
            self.process.waitForFinished(KILL_WAIT_MS)

    def _read_output(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._tail = (self._tail + [line])[-5:]
                self.output.emit(line)

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._read_output()
        self._remove_scratch()
        if exit_status != QProcess.NormalExit:
            self.finished.emit(False, "The installation was stopped before it finished.")
        elif exit_code != 0:
            self.finished.emit(False, _failure_message(self._tail))
        else:
            add_owned_packages_to_path(self.plan.target)
            names = ", ".join(self.plan.requirements)
            self.finished.emit(True, f"Installed {names} into {self.plan.target}.")

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:  # no finished signal follows
            self._remove_scratch()
            # The interpreter did not start (a missing pip is pip's own failure, reported when it ends)
            self.finished.emit(False, f"Could not start Python ({self.plan.python}) to run pip: "
                                      f"{self.process.errorString()}. Check that this Python of QGIS exists.")


    def _remove_scratch(self) -> None:
        """In a thread: deleting an unpacked torch takes seconds that QGIS must not wait."""
        if self.scratch is not None:
            threading.Thread(target=shutil.rmtree, args=(self.scratch,), kwargs={"ignore_errors": True},
                             name="deepcl-remove-pip-files").start()
            self.scratch = None


def _pip_environment(temporary_folder: Path) -> QProcessEnvironment:
    environment = QProcessEnvironment.systemEnvironment()
    # Unbuffered so lines arrive while pip works; no user site so pip sees what QGIS sees.
    environment.insert("PYTHONUNBUFFERED", "1")
    environment.insert("PYTHONNOUSERSITE", "1")
    environment.insert("PIP_NO_WARN_SCRIPT_LOCATION", "1")
    for name in ("TMPDIR", "TEMP", "TMP"):  # Python's tempfile, which pip uses, reads these
        environment.insert(name, str(temporary_folder))
    return environment


def _failure_message(tail: Sequence[str]) -> str:
    last = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "")
    hint = ""
    if "No matching distribution" in last or "Could not find a version" in last:
        hint = " pip found no matching package: check the internet connection or the package index."
    elif "No module named pip" in last:
        hint = " The Python of QGIS has no pip: install it (e.g. 'python3-pip') and try again."
    return f"The installation failed: {last.strip()}.{hint}".replace("..", ".")


def installed_version(module: str, folder: Optional[Path] = None) -> Optional[str]:
    """The version of ``module`` found in ``folder`` (or the owned folder) from its dist-info."""
    folder = Path(folder) if folder is not None else owned_packages_folder()
    prefix = module.replace("-", "_").lower() + "-"
    for info in sorted(folder.glob("*.dist-info")) if folder.is_dir() else []:
        if info.name.lower().startswith(prefix):
            return info.name[len(prefix):-len(".dist-info")]
    return None

