"""The QGIS plugin: registers the Processing provider and a menu/toolbar entry for detection."""
from __future__ import annotations

from typing import List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAction

from .dependencies import add_owned_packages_to_path
from .paths import icon
from .provider import DeepCLProvider

MENU = "&DeepCL"


class DeepCLPlugin:
    def __init__(self, iface: object) -> None:
        self.iface = iface
        self.provider: Optional[DeepCLProvider] = None
        self.actions: List[QAction] = []
        self.dock: Optional[object] = None  # the panel, made when first opened
        self.dock_action: Optional[QAction] = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        """Called by QGIS also when only Processing runs (qgis_process), without a GUI."""
        add_owned_packages_to_path()  # PyTorch installed by the panel lives there
        if self.provider is None:
            self.provider = DeepCLProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self._add_action("detect", "Detect changes…", "deepcl:detectchanges")
        self._add_action("train", "Train a change detection model…", "deepcl:trainmodel")
        self._add_action("evaluate", "Evaluate a change map…", "deepcl:evaluatemodel")
        self._add_dock_action()

    def _add_dock_action(self) -> None:
        self.dock_action = QAction(icon("deepcl"), "DeepCL panel", self.iface.mainWindow())
        self.dock_action.setCheckable(True)
        self.dock_action.setToolTip("One-click change detection between a before and an after layer")
        self.dock_action.triggered.connect(self.toggle_dock)
        self.iface.addPluginToRasterMenu(MENU, self.dock_action)
        self.iface.addRasterToolBarIcon(self.dock_action)

    def toggle_dock(self) -> None:
        """Bring the panel to the front (making it on first use), or close it when it is in front,
        as QGIS's own panels do: behind another tab of its dock area it is open, not closed."""
        if self.dock is None:
            from .dock.panel import DeepCLDock  # the panel imports more; only when wanted

            self.dock = DeepCLDock(self.iface)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            # Opened or closed, not visibilityChanged: that is False too when another tab of the
            # same dock area is chosen, and the button then closed the panel hidden behind it.
            self.dock.openedStateChanged.connect(self.dock_action.setChecked)
        elif self.dock.isUserVisible():
            self.dock.close()
            return
        self.dock.setUserVisible(True)
        self.dock_action.setChecked(True)  # also when only raised: clicking unchecked it

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
        self._remove_dock()
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def _remove_dock(self) -> None:
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.dock_action is not None:
            self.iface.removePluginRasterMenu(MENU, self.dock_action)
            self.iface.removeRasterToolBarIcon(self.dock_action)
            self.dock_action.deleteLater()
            self.dock_action = None
