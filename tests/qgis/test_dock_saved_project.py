"""The panel's Change layer and a project saved while it shows a re-classified map: the saved project
opens with its change map after the slider has moved on, and the maps no layer and no saved project
refers to are still deleted."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from deepcl_qgis.threshold_scale import position_of
from plugin_test_helpers import image, read, wait_for

FAST = {"tile": 128, "overlap": 16}


@pytest.fixture
def dock(deepcl_provider, qgis_iface, qgis_new_project, tiny_model, oscd_crop, tmp_path):
    """A panel that has run once on the OSCD crop at threshold 0.60, with fast settings."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
    from qgis.PyQt import sip

    from deepcl_qgis.dock.panel import DeepCLDock

    QgsSettings().remove("deepcl/panel")
    for role, name in (("before", "abudhabi_20150801"), ("after", "abudhabi_20180328")):
        QgsProject.instance().addMapLayer(QgsRasterLayer(image(oscd_crop, role), name, "gdal"))
    panel = DeepCLDock(qgis_iface)
    panel.form.model_widget.setFilePath(str(tiny_model))
    panel.form.tile_spin.setValue(FAST["tile"])
    panel.form.overlap_spin.setValue(FAST["overlap"])
    panel.form.device_combo.setCurrentIndex(panel.form.device_combo.findData("cpu"))
    (tmp_path / "out").mkdir()
    panel.form.output_widget.setFilePath(str(tmp_path / "out"))
    panel.form.threshold_slider.setValue(position_of(0.60))  # the tests move below: to re-classified maps
    _run(panel)
    yield panel
    if not sip.isdeleted(panel):  # its slots must not run on a later test's project
        panel.cancel()
        wait_for(lambda: not panel.is_running() and panel.latest.task is None)
        sip.delete(panel)
    QgsSettings().remove("deepcl/panel")


def _run(dock) -> None:
    dock.form.run_button.click()
    assert dock.is_running(), dock.form.error_label.text()
    wait_for(lambda: not dock.is_running())
    assert dock.latest.layer() is not None, dock.form.error_label.text()


def _move_to(dock, threshold: float) -> Path:
    """Move the slider to ``threshold`` and wait for the Change layer to show its map."""
    layer = dock.latest.layer()
    dock.form.threshold_slider.setValue(position_of(threshold))
    wait_for(lambda: abs(float(layer.customProperty("deepcl/threshold")) - threshold) < 1e-9
             and dock.latest.task is None, timeout=30)
    assert dock.form.error_label.text() == ""
    return Path(layer.source())


def _save(project_file: Path) -> None:
    from qgis.core import QgsProject

    assert QgsProject.instance().write(str(project_file))


def _reopened(project_file: Path):
    """``project_file`` opened as a project of its own (the panel's stays as it is)."""
    from qgis.core import QgsProject

    project = QgsProject()
    assert project.read(str(project_file))
    return project


def _change_layers(project) -> List:
    return [layer for layer in project.mapLayers().values() if layer.name() == "Change"]


def _change_maps(run_map: Path) -> set:
    return {path.name for path in run_map.parent.glob("change*.tif")}


def _assert_opens_with(project_file: Path, change_map: Path, threshold: float) -> None:
    project = _reopened(project_file)
    [layer] = _change_layers(project)
    assert layer.isValid(), f"{project_file.name} cannot show its Change layer: {layer.source()} is gone"
    assert Path(layer.source()) == change_map
    confidence = read(layer.customProperty("deepcl/confidence"))
    np.testing.assert_array_equal(read(change_map), np.where(confidence < 0, 255, confidence >= threshold))


def test_a_saved_project_opens_with_its_change_map_after_the_slider_moves_on(dock, tmp_path):
    """Saved at 0.30, then the slider moved twice: the 0.30 map was deleted as the layer moved on,
    and the saved project opened with an invalid Change layer. The map between, which nothing refers
    to, is deleted as before."""
    run_map = Path(dock.latest.layer().source())
    at_030 = _move_to(dock, 0.30)
    _save(tmp_path / "saved.qgz")
    at_040 = _move_to(dock, 0.40)
    at_045 = _move_to(dock, 0.45)
    _assert_opens_with(tmp_path / "saved.qgz", at_030, 0.30)
    assert not at_040.exists()
    assert _change_maps(run_map) == {run_map.name, at_030.name, at_045.name}


def test_a_project_opened_again_brings_its_pair_and_its_change_layer_follows_the_slider(dock, tmp_path):
    """Project ▸ Open of a saved run: the before and after boxes stayed empty and the slider did
    nothing, without a word. Its Change layer follows the slider again, from its saved threshold,
    and the map the file refers to stays when the layer moves on from it."""
    from qgis.core import QgsProject

    run_map = Path(dock.latest.layer().source())
    at_030 = _move_to(dock, 0.30)
    _save(tmp_path / "saved.qgz")
    QgsProject.instance().clear()
    assert dock.latest.layer() is None and dock.form.before_combo.currentLayer() is None
    dock.form.threshold_slider.setValue(position_of(0.70))  # a choice for the next run meanwhile
    assert QgsProject.instance().read(str(tmp_path / "saved.qgz"))
    names = (dock.form.before_combo.currentLayer().name(), dock.form.after_combo.currentLayer().name())
    assert names == ("abudhabi_20150801", "abudhabi_20180328")
    assert dock.threshold() == pytest.approx(0.30) and Path(dock.latest.layer().source()) == at_030
    at_045 = _move_to(dock, 0.45)
    confidence = read(dock.latest.layer().customProperty("deepcl/confidence"))
    np.testing.assert_array_equal(read(at_045), np.where(confidence < 0, 255, confidence >= 0.45))
    assert "at threshold 0.45 (re-classified" in dock.form.summary_label.text()
    assert at_030.exists()  # the saved file's map
    assert _move_to(dock, 0.60) == run_map  # back at the run's threshold: its own map


def test_a_project_opened_before_the_panel_is_followed_by_the_panel_built_then(dock, qgis_iface, tmp_path):
    """QGIS builds the panel at its first click, often after the project is open: the slider did
    nothing, without a word. The new panel adopts the latest run, from its saved threshold."""
    from qgis.core import QgsProject
    from qgis.PyQt import sip

    from deepcl_qgis.dock.panel import DeepCLDock

    at_030 = _move_to(dock, 0.30)
    _save(tmp_path / "saved.qgz")
    sip.delete(dock)  # as the plugin's unload does
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(tmp_path / "saved.qgz"))
    panel = DeepCLDock(qgis_iface)
    try:
        assert panel.threshold() == pytest.approx(0.30) and Path(panel.latest.layer().source()) == at_030
        at_045 = _move_to(panel, 0.45)
        confidence = read(panel.latest.layer().customProperty("deepcl/confidence"))
        np.testing.assert_array_equal(read(at_045), np.where(confidence < 0, 255, confidence >= 0.45))
        # The re-classified map says what made it, at its own threshold, as the run's maps do
        from osgeo import gdal

        made_by = gdal.Open(str(at_045)).GetMetadata()
        assert made_by["DEEPCL_THRESHOLD"] == "0.45" and made_by["DEEPCL_MODEL"].endswith(".pt")
    finally:
        panel.cancel()
        wait_for(lambda: not panel.is_running() and panel.latest.task is None)
        sip.delete(panel)


def test_a_run_written_through_a_linked_folder_is_followed_once_reopened(dock, tmp_path):
    """QGIS reads a project's sources back with links followed, where the run's kept paths still
    went through the link: the Change layer was taken for one moved, and no longer followed."""
    from qgis.core import QgsProject

    (tmp_path / "linked").symlink_to(tmp_path / "out")
    dock.form.output_widget.setFilePath(str(tmp_path / "linked"))
    _run(dock)
    assert str(tmp_path / "linked") in dock.latest.layer().source()
    _save(tmp_path / "saved.qgz")
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(tmp_path / "saved.qgz"))
    assert dock.latest.layer() is not None
    assert _move_to(dock, 0.45).parent.resolve() == Path(dock.latest.run_map).resolve().parent


def test_a_project_moved_or_edited_by_hand_is_not_followed(dock, tmp_path):
    """The run a Change layer keeps names its folder: a project copied elsewhere with its run's folder
    (QGIS opens its layers there) would have re-classified the old folder's confidence map; a kept
    run edited by hand raised in the panel's slots."""
    import json
    import shutil

    from qgis.core import QgsProject

    run_folder = Path(dock.latest.layer().source()).parent
    _save(tmp_path / "out" / "saved.qgz")  # beside the run's folder: QGIS stores the layers' paths relative
    moved = shutil.copytree(tmp_path / "out", tmp_path / "moved")
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(moved / "saved.qgz"))
    [layer] = _change_layers(QgsProject.instance())
    assert Path(layer.source()).parent == moved / run_folder.name and dock.latest.layer() is None
    # In its place the project is followed, until its kept run is edited by hand
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(tmp_path / "out" / "saved.qgz"))
    assert dock.latest.layer() is not None
    [layer] = _change_layers(QgsProject.instance())
    layer.setCustomProperty("deepcl/run", json.dumps({**json.loads(layer.customProperty("deepcl/run")), "area": 5}))
    _save(tmp_path / "out" / "edited.qgz")
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(tmp_path / "out" / "edited.qgz"))
    assert dock.latest.layer() is None and dock.form.error_label.text() == ""


def test_save_as_keeps_each_files_map_and_saving_over_a_file_lets_its_old_map_go(dock, tmp_path):
    first, second = tmp_path / "first.qgz", tmp_path / "second.qgs"
    run_map = Path(dock.latest.layer().source())
    at_030 = _move_to(dock, 0.30)
    _save(first)
    at_040 = _move_to(dock, 0.40)
    _save(second)  # Save As
    at_045 = _move_to(dock, 0.45)
    _assert_opens_with(first, at_030, 0.30)
    _assert_opens_with(second, at_040, 0.40)
    _save(first)  # saved over: its 0.30 map is no one's now
    at_050 = _move_to(dock, 0.50)
    assert not at_030.exists()
    _assert_opens_with(first, at_045, 0.45)
    _assert_opens_with(second, at_040, 0.40)
    assert _change_maps(run_map) == {run_map.name, at_040.name, at_045.name, at_050.name}


def test_an_earlier_runs_change_layer_keeps_its_map(dock, tmp_path):
    """A second run's Change layer follows the slider; the first run's, still in the project, keeps
    showing its re-classified map (saved or not), which is not deleted when the second moves on."""
    first_layer = dock.latest.layer()
    at_030 = _move_to(dock, 0.30)
    _save(tmp_path / "saved.qgz")
    _run(dock)
    assert dock.latest.layer() is not first_layer
    _move_to(dock, 0.40)
    _save(tmp_path / "saved.qgz")
    _move_to(dock, 0.45)
    assert Path(first_layer.source()) == at_030 and at_030.exists()
    project = _reopened(tmp_path / "saved.qgz")
    assert [layer.isValid() for layer in _change_layers(project)] == [True, True]


def test_a_re_classification_running_when_the_plugin_unloads_ends_without_the_panel(dock, tmp_path):
    """Unloading (or reloading) the plugin while the slider's re-classification ran: when it ended it
    re-pointed the Change layer and then wrote its summary into the deleted panel (RuntimeError)."""
    from qgis.core import QgsApplication
    from qgis.PyQt import sip

    layer = dock.latest.layer()
    run_map = Path(layer.source())
    dock.form.threshold_slider.setValue(position_of(0.30))
    dock.latest.reclassify_now()  # the slider rested: the task is queued, its end not yet handled
    assert dock.latest.task is not None
    dock.shutdown()  # as the plugin's unload does, then deletes the panel
    sip.delete(dock)
    # The task's end is handed to the main thread: the map it may have written is deleted then
    wait_for(lambda: QgsApplication.taskManager().countActiveTasks() == 0 and _change_maps(run_map) == {run_map.name},
             timeout=30)
    assert Path(layer.source()) == run_map and abs(float(layer.customProperty("deepcl/threshold")) - 0.60) < 1e-9
