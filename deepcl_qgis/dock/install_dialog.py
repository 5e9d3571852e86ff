"""The dialog that installs PyTorch: what is missing, what will be installed where (the CUDA or
the CPU build, once nvidia-smi has answered), pip's output live, and the result in plain words."""
from __future__ import annotations

from html import escape
from typing import Optional

from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout,
                                 QWidget)

from ..dependencies import unusable_dependencies, unusable_summary
from ..nvidia_driver import DriverQuery
from ..torch_installer import InstallPlan, PipInstaller, torch_plan

ERROR_STYLE = "color: #b00020;"
SUCCESS_STYLE = "color: #1b5e20;"


class InstallDialog(QDialog):
    def __init__(self, parent: Optional[QWidget] = None, plan: Optional[InstallPlan] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Install PyTorch for DeepCL")
        self.resize(720, 420)
        self.plan = plan
        self.installer = PipInstaller(self)
        self.installer.output.connect(self._append)
        self.installer.finished.connect(self._on_finished)
        self.succeeded: Optional[bool] = None
        self._build()
        self.driver: Optional[DriverQuery] = None
        if plan is None:  # the build to install follows the NVIDIA driver
            self.driver = DriverQuery(self)
            self.driver.answered.connect(self._on_driver_answer)
            self.driver.start()
        else:
            self._show_plan(plan)

    def _build(self) -> None:
        self.intro = QLabel("Looking for an NVIDIA GPU (nvidia-smi) to choose the PyTorch build…")
        self.intro.setWordWrap(True)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.install_button = QPushButton("Install")
        self.install_button.setEnabled(False)  # until the plan is known
        self.close_button = QPushButton("Close")
        self.install_button.clicked.connect(self.install)
        self.close_button.clicked.connect(self._close_or_stop)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        for widget in (self.intro, self.output, self.result_label):
            layout.addWidget(widget)
        layout.addLayout(buttons)

    def _on_driver_answer(self, driver_cuda: Optional[tuple]) -> None:
        self._show_plan(torch_plan(driver_cuda))

    def _show_plan(self, plan: InstallPlan) -> None:
        self.plan = plan
        problem = unusable_summary(unusable_dependencies())
        status = (f"Now <b>{escape(problem)}</b>." if problem
                  else "DeepCL has all it needs (a reinstall replaces the plugin's copy).")
        self.intro.setText(f"{status}<br>The plugin installs <b>{' '.join(plan.requirements)}</b> "
                           f"({plan.build} build) with pip into its own folder, not into QGIS's Python:<br>"
                           f"<code>{plan.target}</code><br>This downloads a few hundred MB (a CUDA build: "
                           "a few GB) and takes several minutes.")
        self.install_button.setEnabled(True)

    def install(self) -> None:
        self.install_button.setEnabled(False)
        self.close_button.setText("Stop")
        self.result_label.setText("Installing…")
        self.installer.start(self.plan)

    def _append(self, line: str) -> None:
        self.output.appendPlainText(line)

    def _on_finished(self, ok: bool, message: str) -> None:
        self.succeeded = ok
        self.close_button.setText("Close")
        self.install_button.setEnabled(not ok)
        if ok:  # e.g. an old torch this session loaded stays until QGIS restarts
            problem = unusable_summary(unusable_dependencies())
            message += f" Restart QGIS to use it (now {problem})." if problem else " DeepCL is ready to use."
        self.result_label.setStyleSheet(SUCCESS_STYLE if ok else ERROR_STYLE)
        self.result_label.setText(message)

    def _close_or_stop(self) -> None:
        if self.installer.is_running():
            self.installer.cancel()
        else:
            self.accept()

    def reject(self) -> None:
        self.installer.cancel()  # closing the window must not leave pip running unseen
        super().reject()

    def done(self, result: int) -> None:  # Qt calls it however the dialog closes
        if self.driver is not None:
            self.driver.stop()
        super().done(result)
