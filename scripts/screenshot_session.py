"""Runs inside QGIS (``qgis --code``), started by scripts/screenshots.py: loads the sample pair,
opens the DeepCL panel, grabs the main window, runs detection, waits for the task and grabs it
again. Settings come from environment variables the launcher sets."""
import os
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

REPO = Path(os.environ["DEEPCL_REPO"])
OUT = Path(os.environ["DEEPCL_SCREENSHOT_OUT"])
MODEL = os.environ["DEEPCL_SCREENSHOT_MODEL"]
THRESHOLD = os.environ.get("DEEPCL_SCREENSHOT_THRESHOLD", "")  # empty: the model's own, as users get it
# With an untrained fixture model any fixed threshold marks all or nothing; the top decile of its
# confidence shows what the layers look like (and exercises the threshold slider).
TOP_DECILE = os.environ.get("DEEPCL_SCREENSHOT_TOP_DECILE") == "1"
SAMPLE = REPO / "resources" / "sample"
STATE = {}


def fail() -> None:
    (OUT / "session_error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    QgsApplication.exit(1)


def guarded(step):
    def run() -> None:
        try:
            step()
        except Exception:
            fail()
    return run


def start() -> None:
    import deepcl_qgis
    from deepcl_qgis.threshold_scale import position_of

    window = iface.mainWindow()
    window.resize(1600, 1000)
    window.showMaximized()
    layers = []
    for name, file in (("hongkong_2018-03-23", "hongkong_after.tif"), ("hongkong_2016-09-27", "hongkong_before.tif")):
        layer = QgsRasterLayer(str(SAMPLE / file), name, "gdal")
        QgsProject.instance().addMapLayer(layer)
        layers.append(layer)
    plugin = deepcl_qgis.classFactory(iface)
    plugin.initGui()
    plugin.dock_action.trigger()
    dock = plugin.dock
    dock.form.model_widget.setFilePath(MODEL)
    dock.form.device_combo.setCurrentIndex(dock.form.device_combo.findData("cpu"))
    if THRESHOLD:
        dock.form.threshold_slider.setValue(position_of(float(THRESHOLD)))
    dock.form.output_widget.setFilePath(str(OUT / "run"))
    (OUT / "run").mkdir(exist_ok=True)
    iface.mapCanvas().setExtent(layers[0].extent())
    iface.mapCanvas().refresh()
    STATE.update(plugin=plugin, dock=dock)
    QTimer.singleShot(4000, guarded(shoot_before))


def grab(name: str) -> None:
    iface.mainWindow().grab().save(str(OUT / name))


def shoot_before() -> None:
    grab("panel_before_run.png")
    STATE["dock"].form.run_button.click()
    QTimer.singleShot(500, guarded(wait_for_run))


def wait_for_run() -> None:
    if STATE["dock"].is_running():
        QTimer.singleShot(500, guarded(wait_for_run))
        return
    if TOP_DECILE:
        move_threshold_to_top_decile()
    iface.mapCanvas().refresh()
    QTimer.singleShot(4000, guarded(shoot_after))


def move_threshold_to_top_decile() -> None:
    import numpy as np
    from osgeo import gdal

    from deepcl_qgis.threshold_scale import position_of

    layer = STATE["dock"].latest.layer()
    confidence = gdal.Open(layer.customProperty("deepcl/confidence")).ReadAsArray()
    value = float(np.quantile(confidence[confidence >= 0], 0.9))
    STATE["dock"].form.threshold_slider.setValue(position_of(value))


def shoot_after() -> None:
    grab("panel_after_run.png")
    (OUT / "summary.txt").write_text(STATE["dock"].form.summary_label.text() + STATE["dock"].form.error_label.text(),
                                     encoding="utf-8")
    QgsProject.instance().setDirty(False)
    QgsApplication.exit(0)


QTimer.singleShot(1000, guarded(start))
