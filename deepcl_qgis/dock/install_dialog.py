"""The dialog that installs PyTorch: what is missing, what will be installed where, pip's output
live, and the result in plain words."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout,
                                 QWidget)

from ..dependencies import missing_dependencies
from ..torch_installer import InstallPlan, PipInstaller, torch_plan

ERROR_STYLE = "color: #b00020;"
SUCCESS_STYLE = "color: #1b5e20;"


class InstallDialog(QDialog):
    def __init__(self, parent: Optional[QWidget] = None, plan: Optional[InstallPlan] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Install PyTorch for DeepCL")
        self.resize(720, 420)
        self.plan = plan or torch_plan()
        self.installer = PipInstaller(self)
        self.installer.output.connect(self._append)
        self.installer.finished.connect(self._on_finished)
        self.succeeded: Optional[bool] = None
        self._build()

    def _build(self) -> None:
        missing = ", ".join(missing_dependencies()) or "nothing (a reinstall replaces the plugin's copy)"
        intro = QLabel(f"Missing: <b>{missing}</b>.<br>The plugin installs <b>{' '.join(self.plan.requirements)}</b> "
                       f"({self.plan.build} build) with pip into its own folder, not into QGIS's Python:<br>"
                       f"<code>{self.plan.target}</code><br>This downloads a few hundred MB (a CUDA build: "
                       "a few GB) and takes several minutes.")
        intro.setWordWrap(True)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.install_button = QPushButton("Install")
        self.close_button = QPushButton("Close")
        self.install_button.clicked.connect(self.install)
        self.close_button.clicked.connect(self._close_or_stop)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        for widget in (intro, self.output, self.result_label):
            layout.addWidget(widget)
        layout.addLayout(buttons)

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
        if ok:
            still_missing = missing_dependencies()
            message += (" Restart QGIS to use it." if still_missing else " DeepCL is ready to use.")
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
