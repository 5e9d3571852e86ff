"""The QGIS plugin: registers the Processing provider and a menu/toolbar entry for detection."""
from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QAction

from .paths import icon
from .provider import DeepCLProvider

MENU = "&DeepCL"


class DeepCLPlugin:
    def __init__(self, iface: object) -> None:
        self.iface = iface
        self.provider: Optional[DeepCLProvider] = None
        self.actions: List[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        """Called by QGIS also when only Processing runs (qgis_process), without a GUI."""
        if self.provider is None:
            self.provider = DeepCLProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self._add_action("detect", "Detect changes…", "deepcl:detectchanges")
        self._add_action("train", "Train a change detection model…", "deepcl:trainmodel")
        self._add_action("evaluate", "Evaluate a change map…", "deepcl:evaluatemodel")

    def _add_action(self, icon_name: str, text: str, algorithm_id: str) -> None:
        action = QAction(icon(icon_name), text, self.iface.mainWindow())
        action.triggered.connect(lambda _checked=False, alg=algorithm_id: self._open_dialog(alg))
        self.iface.addPluginToRasterMenu(MENU, action)
        if algorithm_id == "deepcl:detectchanges":
            self.iface.addRasterToolBarIcon(action)
        self.actions.append(action)

    @staticmethod
    def _open_dialog(algorithm_id: str) -> None:
        import processing  # the Processing plugin is loaded by the time a user clicks

        processing.execAlgorithmDialog(algorithm_id, {})

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
