"""A read-only view of the diagnostics, with a button that copies them for a bug report."""
from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton,
                                 QVBoxLayout, QWidget)

from .diagnostics import diagnostics_text


class DiagnosticsDialog(QDialog):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("DeepCL diagnostics")
        self.resize(640, 320)
        self.text = QPlainTextEdit(diagnostics_text())
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

    def copy(self) -> None:
        QApplication.clipboard().setText(self.text.toPlainText())
        self.copy_button.setText("Copied")
