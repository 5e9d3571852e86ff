"""The panel's parts on their own: layer preselection, re-classification, summaries, settings,
diagnostics, and the plugin's dock entry and clean unload."""
from __future__ import annotations

import os
from datetime import date

import numpy as np
import pytest
from osgeo import gdal

from plugin_test_helpers import REPO, fake_nvidia_smi, image, pair, read, wait_for


def _layer(path: str, name: str):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, name, "gdal")
    assert layer.isValid()
    return layer


@pytest.mark.parametrize("text, expected", [
    ("S2_20160927_B04", date(2016, 9, 27)), ("hongkong 2018-03-23", date(2018, 3, 23)),
    ("ortho_2019", date(2019, 7, 1)), ("before", None), ("tile_123456789", None)])
def test_dates_in_layer_names(qgis_app, text, expected):
    from deepcl_qgis.dock.layer_choice import date_in_text

    assert date_in_text(text) == expected


def test_preselection_puts_the_older_date_first(qgis_app):
    from deepcl_qgis.dock.layer_choice import preselect

    folder = pair("oscd", "hongkong")
    newer = _layer(image(folder, "after"), "hongkong_2018-03-23")
    older = _layer(image(folder, "before"), "hongkong_2016-09-27")
    unrelated = _layer(image(folder, "label"), "label")
    assert preselect([older, newer, unrelated]) == (older, newer)  # most recent first, dates decide
    assert preselect([newer, older]) == (older, newer)


def test_preselection_reads_before_after_words_and_gdal_metadata(qgis_app, tmp_path):
    from deepcl_qgis.dock.layer_choice import acquisition_date, preselect

    folder = pair("dsifn", "0_2")
    after, before = _layer(image(folder, "after"), "post-event"), _layer(image(folder, "before"), "pre-event")
    assert preselect([before, after]) == (before, after)  # most recent first: 'pre' wins over order
    tagged = tmp_path / "tagged.tif"
    gdal.Translate(str(tagged), image(folder, "before"), metadataOptions=["TIFFTAG_DATETIME=2014:05:06 10:00:00"])
    assert acquisition_date(_layer(str(tagged), "untitled")) == date(2014, 5, 6)


def test_a_layer_whose_file_is_gone_has_no_date_while_the_host_has_gdal_exceptions_on(qgis_app, tmp_path,
                                                                                     gdal_exceptions_on):
    """The preselection reads the layers' GDAL metadata when layers are added: with GDAL's exceptions
    on (another plugin, GDAL 4's default) a layer whose file was removed raised into QGIS."""
    from deepcl_qgis.dock.layer_choice import acquisition_date
    from deepcl_qgis.dock.reclassify import reclassify

    copy = tmp_path / "scene.tif"
    gdal.Translate(str(copy), image(pair("dsifn", "0_2"), "before"))
    layer = _layer(str(copy), "untitled")
    copy.unlink()
    assert acquisition_date(layer) is None
    with pytest.raises(OSError, match="cannot read the confidence map"):  # the slider's re-classification
        reclassify(copy, tmp_path / "change.tif", 0.5)


def test_reclassify_writes_confidence_at_least_threshold(qgis_app, tmp_path):
    from deepcl_qgis.dock.reclassify import reclassify

    folder = pair("oscd", "hongkong")
    confidence = tmp_path / "confidence.tif"
    # A real georeferenced grid with a confidence-like ramp and a nodata corner.
    source = gdal.Open(image(folder, "before"))
    values = (source.GetRasterBand(1).ReadAsArray().astype(np.float32) % 1000) / 1000
    values[:10, :10] = -1
    target = gdal.GetDriverByName("GTiff").Create(str(confidence), source.RasterXSize, source.RasterYSize, 1,
                                                  gdal.GDT_Float32)
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    target.GetRasterBand(1).SetNoDataValue(-1)
    target.GetRasterBand(1).WriteArray(values)
    target = None
    counts = reclassify(confidence, tmp_path / "change.tif", 0.42)
    change = read(tmp_path / "change.tif")
    np.testing.assert_array_equal(change, np.where(values < 0, 255, values >= 0.42))
    assert counts.changed_pixels == int((change == 1).sum()) and counts.valid_pixels == values.size - 100
    assert 50 * counts.changed_pixels < counts.changed_area_m2 < 200 * counts.changed_pixels  # ~100 m² pixels
    written = gdal.Open(str(tmp_path / "change.tif"))
    assert written.GetGeoTransform() == source.GetGeoTransform()
    assert written.GetRasterBand(1).GetOverviewCount() == 0  # the confidence map has none

    # A confidence map with overviews (as Processing builds them) gives a change map with them too.
    dataset = gdal.Open(str(confidence), gdal.GA_Update)
    dataset.BuildOverviews("AVERAGE", [2])
    dataset = None
    reclassify(confidence, tmp_path / "change_with_overviews.tif", 0.42)
    with_overviews = gdal.Open(str(tmp_path / "change_with_overviews.tif"))
    band = with_overviews.GetRasterBand(1)
    assert band.GetOverviewCount() == 1 and set(np.unique(band.GetOverview(0).ReadAsArray())) <= {0, 1, 255}

    # A run that fails midway leaves nothing: the map is put in place only once complete.
    folder = tmp_path / "failed"
    folder.mkdir()
    with pytest.raises(TypeError):
        reclassify(confidence, folder / "change.tif", "not a number")
    assert list(folder.iterdir()) == []

    # A name that is taken (e.g. by another program meanwhile): the task reports it and keeps the file.
    from deepcl_qgis.dock.reclassify_task import ReclassifyTask

    taken = folder / "taken.tif"
    taken.write_bytes(b"someone's file")
    reported = []
    task = ReclassifyTask(confidence, taken, 0.42, lambda counts, path, error: reported.append((counts, error)))
    assert task.run() is False
    task.finished(False)
    assert taken.read_bytes() == b"someone's file"
    assert reported[0][0] is None and "could not be updated" in reported[0][1] and "kept" in reported[0][1]


def test_summaries_in_hectares_or_pixels():
    from deepcl_qgis.dock.summary import run_summary

    text = run_summary({"CHANGED_AREA_M2": 123_456.0, "CHANGED_PERCENT": 4.5678, "CHANGED_PIXELS": 1234,
                        "DEVICE_USED": "cpu"}, 0.5, 12.34)
    assert text == "Changed: 12.35 ha (4.57 %) at threshold 0.50; 12.3 s on cpu."
    enlarged = run_summary({"CHANGED_AREA_M2": 1e4, "CHANGED_PERCENT": 1.0, "CHANGED_PIXELS": 100,
                            "DEVICE_USED": "cuda", "INPUT_SCALE_USED": 2}, 0.01, 1.0)
    assert enlarged == "Changed: 1.00 ha (1.00 %) at threshold 0.01, images enlarged 2× for the network; 1.0 s on cuda."
    assert "1,234 pixels (4.57 %; images not georeferenced" in run_summary(
        {"CHANGED_AREA_M2": None, "CHANGED_PERCENT": 4.5678, "CHANGED_PIXELS": 1234}, 0.5, 200)


def test_settings_round_trip_and_survive_bad_values(qgis_app):
    from qgis.core import QgsSettings

    from deepcl_qgis.dock.settings import PREFIX, PanelChoices, load_choices, save_choices

    settings = QgsSettings()
    settings.remove("deepcl/panel")
    choices = PanelChoices(before_source="/a.tif", threshold=0.37, device="cpu", tile_size=256, polygons=True)
    save_choices(choices)
    assert load_choices() == choices
    settings.setValue(PREFIX + "tile_size", "not a number")
    assert load_choices().tile_size == PanelChoices().tile_size
    # A threshold kept by a version before the calibrated confidence (0.01, the old 10 m default,
    # marked 15 % of a Sentinel-2 pair changed where the model's own marks 1.4 %) is dropped.
    settings.remove("deepcl/panel")
    settings.setValue(PREFIX + "threshold", 0.01)
    settings.setValue(PREFIX + "device", "cpu")
    assert load_choices().threshold == PanelChoices().threshold and load_choices().device == "cpu"
    settings.remove("deepcl/panel")


def test_diagnostics_name_versions_devices_and_folder(qgis_app, tmp_path, monkeypatch):
    import configparser

    import torch
    from qgis.PyQt.QtWidgets import QApplication

    import deepcl_core
    from deepcl_qgis.dock.diagnostics_dialog import DiagnosticsDialog

    fake = fake_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DEEPCL_DEPS_DIR", str(tmp_path / "deps"))
    dialog = DiagnosticsDialog()
    assert "asking nvidia-smi" in dialog.text.toPlainText()  # shown at once, the driver's row to come
    wait_for(lambda: "asking" not in dialog.text.toPlainText(), timeout=30)
    text = dialog.text.toPlainText()
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    for expected in (f"DeepCL plugin          : {metadata['general']['version']} ({REPO})",
                     f"DeepCL engine          : {deepcl_core.__version__} from {REPO / 'deepcl_core'}",
                     "QGIS", "3.22", "Python", f"GDAL                   : {gdal.__version__} from ",
                     f"numpy                  : {np.__version__} from ",
                     f"PyTorch                : {torch.__version__} from {os.path.dirname(torch.__file__)} "
                     "(not the plugin's copy)", "Devices", "cpu", str(tmp_path / "deps"),
                     "not created yet", "NVIDIA driver", "supports CUDA 12.6", "Unusable packages      : none"):
        assert expected in text
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == text


def test_diagnostics_say_when_pytorch_is_the_plugin_s_own_copy(qgis_app, monkeypatch):
    import torch

    from deepcl_qgis.dock import diagnostics

    monkeypatch.setenv("DEEPCL_DEPS_DIR", os.path.dirname(os.path.dirname(torch.__file__)))
    assert dict(diagnostics.diagnostics())["PyTorch"].endswith("(the plugin's own copy)")


def test_diagnostics_without_pytorch_say_why_and_which_copy_failed(qgis_app, monkeypatch):
    from deepcl_qgis.dependencies import UnusablePackage
    from deepcl_qgis.dock import diagnostics

    broken = UnusablePackage("torch", "fails to import (OSError: [WinError 126] Error loading c10.dll)", "C:/q/torch")
    monkeypatch.setattr(diagnostics, "unusable_dependencies", lambda: (broken,))
    rows = dict(diagnostics.diagnostics())
    assert rows["PyTorch"] == ("torch fails to import (OSError: [WinError 126] Error loading c10.dll) "
                               "(at C:/q/torch)") and "Devices" not in rows
    assert rows["Unusable packages"] == "torch"


def test_plugin_dock_entry_opens_the_panel_and_unload_removes_it(qgis_app, qgis_processing, qgis_iface):
    from qgis.core import QgsApplication

    import deepcl_qgis

    registry = QgsApplication.processingRegistry()
    if registry.providerById("deepcl") is not None:
        registry.removeProvider(registry.providerById("deepcl"))
    plugin = deepcl_qgis.classFactory(qgis_iface)
    plugin.initGui()
    assert plugin.dock is None and plugin.dock_action.text() == "DeepCL panel"
    plugin.dock_action.trigger()
    assert plugin.dock is not None and plugin.dock.windowTitle() == "DeepCL change detection"
    plugin.unload()
    assert plugin.dock is None and plugin.dock_action is None and registry.providerById("deepcl") is None


def test_the_panel_stays_open_when_another_tab_of_its_dock_area_is_chosen(qgis_app, qgis_processing, qgis_iface,
                                                                          monkeypatch):
    """Tabbed with another panel (Layer Styling, say), choosing that tab hides DeepCL's behind it:
    the panel closed itself (its tab vanished) and its toolbar button went off."""
    from qgis.core import QgsApplication
    from qgis.gui import QgsDockWidget
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow

    import deepcl_qgis

    registry = QgsApplication.processingRegistry()
    if registry.providerById("deepcl") is not None:
        registry.removeProvider(registry.providerById("deepcl"))
    window = QMainWindow()
    monkeypatch.setattr(qgis_iface, "addDockWidget", window.addDockWidget)
    monkeypatch.setattr(qgis_iface, "removeDockWidget", window.removeDockWidget)
    styling = QgsDockWidget("Layer Styling", window)
    window.addDockWidget(Qt.RightDockWidgetArea, styling)
    window.show()
    plugin = deepcl_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.dock_action.trigger()
        window.tabifyDockWidget(styling, plugin.dock)
        plugin.dock.raise_()
        qgis_app.processEvents()
        styling.raise_()  # the user chooses the other tab
        qgis_app.processEvents()
        assert not plugin.dock.isUserVisible() and not plugin.dock.isHidden()  # behind the other tab, not closed
        assert plugin.dock_action.isChecked()
        plugin.dock_action.trigger()  # the button brings it to the front
        qgis_app.processEvents()
        assert plugin.dock.isUserVisible() and plugin.dock_action.isChecked()
        plugin.dock_action.trigger()  # then closes it
        qgis_app.processEvents()
        assert plugin.dock.isHidden() and not plugin.dock_action.isChecked()
        plugin.dock_action.trigger()  # and opens it again, in front
        qgis_app.processEvents()
        assert plugin.dock.isUserVisible() and plugin.dock_action.isChecked()
        plugin.dock.close()  # the panel's own close button
        qgis_app.processEvents()
        assert not plugin.dock_action.isChecked()
    finally:
        plugin.unload()
        window.close()


def test_a_run_whose_output_qgis_cannot_open_adds_no_group(qgis_app, qgis_new_project, tmp_path):
    """The group was inserted first: an output QGIS could not open left it in the tree with the
    others, the Change layer without its confidence map, which the slider needs."""
    from qgis.core import QgsProject

    from deepcl_qgis.dock.result_layers import load_results

    project = QgsProject.instance()
    broken = tmp_path / "confidence.tif"
    broken.write_text("cut short by a full disk")
    with pytest.raises(OSError, match="cannot open the confidence output"):
        load_results(project, {"CHANGE": image(pair("oscd", "hongkong"), "label"), "CONFIDENCE": str(broken)},
                     "DeepCL changes", 0.5)
    assert project.layerTreeRoot().findGroups() == [] and project.mapLayers() == {}


def test_re_classifying_a_confidence_map_cut_short_says_so(qgis_app, tmp_path):
    """Its pixels unreadable, the map was met with numpy's "ufunc 'isfinite' not supported …"."""
    from deepcl_qgis.dock.reclassify import reclassify

    whole = tmp_path / "whole.tif"
    source = gdal.Open(image(pair("oscd", "hongkong"), "before"))
    values = (source.GetRasterBand(1).ReadAsArray().astype(np.float32) % 1000) / 1000
    target = gdal.GetDriverByName("GTiff").Create(str(whole), source.RasterXSize, source.RasterYSize, 1,
                                                  gdal.GDT_Float32)
    target.SetGeoTransform(source.GetGeoTransform())
    target.GetRasterBand(1).WriteArray(values)
    target = None
    cut = tmp_path / "confidence.tif"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(OSError, match=f"cannot read the confidence map {cut}: "):
        reclassify(cut, tmp_path / "change.tif", 0.5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["confidence.tif", "whole.tif"]
