"""A read-only view of the diagnostics, with a button that copies them for a bug report. The
NVIDIA driver's row fills in when nvidia-smi answers."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton,
                                 QVBoxLayout, QWidget)

from ..nvidia_driver import DriverQuery
from .diagnostics import diagnostics, diagnostics_text, with_driver


class DiagnosticsDialog(QDialog):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("DeepCL diagnostics")
        self.resize(640, 320)
        self.rows = diagnostics()
        self.text = QPlainTextEdit(diagnostics_text(self.rows))
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.copy_button = QPushButton("Copy to clipboard")
        buttons.addButton(self.copy_button, QDialogButtonBox.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        self.driver = DriverQuery(self)
        self.driver.answered.connect(self._show_driver)
        self.driver.start()

    def _show_driver(self, driver_cuda: Optional[tuple]) -> None:
        self.text.setPlainText(diagnostics_text(with_driver(self.rows, driver_cuda)))

    def done(self, result: int) -> None:  # Qt calls it however the dialog closes
        self.driver.stop()
        super().done(result)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.text.toPlainText())
        self.copy_button.setText("Copied")
