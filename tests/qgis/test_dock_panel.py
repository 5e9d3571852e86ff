"""The dock panel in a real QGIS: layers from a project holding real pairs, the button, the
background task, cancel, the threshold slider, errors and remembered choices."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from core_test_helpers import crop
from deepcl_qgis.threshold_scale import THRESHOLDS, position_of
from plugin_test_helpers import image, pair, read, square_polygons, wait_for

FAST = {"tile": 128, "overlap": 16}


def add_raster(path: str, name: str):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(path, name, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def panel(deepcl_provider, qgis_iface, qgis_new_project, tiny_model, tmp_path):
    """A panel over a project holding an older real pair and then the OSCD crop; fast settings."""
    from qgis.core import QgsSettings

    from deepcl_qgis.dock.panel import DeepCLDock

    QgsSettings().remove("deepcl/panel")
    docks = []
    yield lambda: docks.append(_make_panel(DeepCLDock, qgis_iface, tiny_model, tmp_path / "out")) or docks[-1]
    for dock in docks:  # a run a failed test left going must not outlive its project, nor the panel its test
        dock.cancel()
        wait_for(lambda: not dock.is_running())
        _delete(dock)
    QgsSettings().remove("deepcl/panel")


def _delete(dock) -> None:
    """As the plugin's unload does, at once: its slots must not run on a later test's project."""
    from qgis.PyQt import sip

    if not sip.isdeleted(dock):
        sip.delete(dock)


def _make_panel(dock_class, iface, model: Path, out: Path):
    out.mkdir(exist_ok=True)
    dock = dock_class(iface)
    dock.form.model_widget.setFilePath(str(model))
    dock.form.tile_spin.setValue(FAST["tile"])
    dock.form.overlap_spin.setValue(FAST["overlap"])
    dock.form.device_combo.setCurrentIndex(dock.form.device_combo.findData("cpu"))
    dock.form.output_widget.setFilePath(str(out))
    return dock


def _project_with_pairs(oscd_crop: Path):
    levir = pair("levir", "test_55_0256_0000")
    add_raster(image(levir, "before"), "levir before")
    add_raster(image(levir, "after"), "levir after")
    # Added after-first: the panel must still put the older date first.
    after = add_raster(image(oscd_crop, "after"), "abudhabi_20180328")
    before = add_raster(image(oscd_crop, "before"), "abudhabi_20150801")
    return before, after


def _group(name_start: str = "DeepCL changes"):
    from qgis.core import QgsProject

    return [g for g in QgsProject.instance().layerTreeRoot().findGroups() if g.name().startswith(name_start)]


def _run(dock) -> None:
    dock.form.run_button.click()
    assert dock.is_running(), dock.form.error_label.text()
    assert dock.form.progress_bar.isVisible() or not dock.isVisible()
    wait_for(lambda: not dock.is_running())


def test_detect_button_adds_styled_layers_in_a_group(panel, oscd_crop, tmp_path):
    from qgis.PyQt.QtCore import Qt

    before, after = _project_with_pairs(oscd_crop)
    dock = panel()
    assert dock.form.before_combo.currentLayer() is before and dock.form.after_combo.currentLayer() is after
    assert dock.form.bands_before.count() == 4  # band chooser filled from the layer
    for combo in (dock.form.bands_before, dock.form.bands_after):  # red, green, blue ("Band 1: Red (B04)" …)
        for index in range(3):
            combo.setItemCheckState(index, Qt.Checked)
        assert combo.checkedItemsData() == ["1", "2", "3"]
    dock.form.threshold_slider.setValue(position_of(0.30))
    _run(dock)
    assert dock.form.error_label.text() == ""
    groups = _group()
    assert [g.name() for g in groups] == ["DeepCL changes: abudhabi_20150801 → abudhabi_20180328"]
    layers = {node.layer().name(): node.layer() for node in groups[0].findLayers()}
    assert list(layers) == ["Change", "Confidence"]  # change drawn above the confidence ramp
    # The change map over the imagery; the opaque confidence ramp, which would hide it, unticked.
    assert [node.itemVisibilityChecked() for node in groups[0].findLayers()] == [True, False]
    assert layers["Change"].renderer().type() == "paletted"
    assert layers["Confidence"].renderer().type() == "singlebandpseudocolor"
    change, confidence = read(layers["Change"].source()), read(layers["Confidence"].source())
    assert change.shape == (160, 160)
    np.testing.assert_array_equal(change, np.where(confidence < 0, 255, confidence >= 0.3))
    assert (change == 1).any()
    summary = dock.form.summary_label.text()
    assert " ha (" in summary and "0.00 ha" not in summary and "threshold 0.30" in summary and " s on cpu" in summary
    assert Path(layers["Change"].source()).parent.parent == tmp_path / "out"


def test_a_runs_folder_is_named_after_two_products_folders(panel, oscd_crop, tmp_path):
    """Two layers named after their products' metadata file: the run's folder was
    deepcl_MTD_MSIL2A_MTD_MSIL2A_<time>; each product's folder names its date, the after one's too
    although the two folders' names together are longer than a layer name kept in a file name."""
    import shutil

    folders = [tmp_path / f"S2A_MSIL2A_{day}T065621_N0500_R063_T40RBN_{day}T104401.SAFE"
               for day in ("20150801", "20180328")]
    layers = []
    for folder, date in zip(folders, ("before", "after")):
        folder.mkdir()
        shutil.copy(image(oscd_crop, date), folder / "MTD_MSIL2A.tif")
        layers.append(add_raster(str(folder / "MTD_MSIL2A.tif"), "MTD_MSIL2A"))
    dock = panel()
    dock.form.before_combo.setLayer(layers[0])
    dock.form.after_combo.setLayer(layers[1])
    _run(dock)
    assert dock.form.error_label.text() == ""
    [run_folder] = (tmp_path / "out").iterdir()
    assert run_folder.name.startswith("deepcl_S2A_MSIL2A_20150801T065621_")
    assert "_S2A_MSIL2A_20180328T065621_" in run_folder.name
    assert [g.name() for g in _group()] == [f"DeepCL changes: {folders[0].name} → {folders[1].name}"]


def test_long_layer_names_in_any_script_give_a_run_folder_the_file_system_takes(panel, oscd_crop, tmp_path):
    """Names were cut by characters: two 42-character Chinese layer names (126 bytes each) made a run
    folder's name longer than the 255 bytes a file system takes, and the panel blamed the output folder."""
    names = ("北京市海淀区高分二号卫星影像二零一五年六月十二日多光谱融合正射校正成果图幅一号版本二",
             "北京市海淀区高分二号卫星影像二零一九年六月十八日多光谱融合正射校正成果图幅一号版本二")
    before = add_raster(image(oscd_crop, "before"), names[0])
    after = add_raster(image(oscd_crop, "after"), names[1])
    dock = panel()
    dock.form.before_combo.setLayer(before)
    dock.form.after_combo.setLayer(after)
    _run(dock)
    assert dock.form.error_label.text() == ""
    [run_folder] = (tmp_path / "out").iterdir()
    assert run_folder.name.startswith("deepcl_北京市海淀区高分二号卫星影像二零一五年")
    assert len(os.fsencode(run_folder.name)) <= 255 and "_北京市海淀区高分二号卫星影像二零一九年" in run_folder.name
    assert [g.name() for g in _group()] == [f"DeepCL changes: {names[0]} → {names[1]}"]


def test_the_engines_warnings_are_shown_after_the_run(panel, oscd_crop, qgis_iface, tmp_path):
    """An after image of pixels 4 times as large (the crop averaged to 40 m): the run succeeds, and
    its warning is shown under the summary and in the message bar, as is the tiny model's."""
    from qgis.core import Qgis

    coarse = tmp_path / "after_40m.tif"
    source = gdal.Open(image(oscd_crop, "after"))
    _, dx, _, _, _, dy = source.GetGeoTransform()
    gdal.Warp(str(coarse), source, xRes=4 * dx, yRes=-4 * dy, resampleAlg="average")
    add_raster(image(oscd_crop, "before"), "abudhabi_20150801")
    add_raster(str(coarse), "abudhabi_20180328")
    dock = panel()
    qgis_iface.messageBar().clear_messages()
    _run(dock)
    assert dock.form.error_label.text() == "" and dock.form.summary_label.text().startswith("Changed")
    assert "Warning: The after image's pixels are 4.0 times as large" in dock.form.status_label.text()
    shown = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert any("pixels are 4.0 times" in m for m in shown) and any("never trained" in m for m in shown)


def test_moving_the_threshold_reclassifies_without_the_network(panel, oscd_crop):
    """The change layer only: the polygons, which stay as the run made them, say their threshold
    (they were drawn over a re-classified map as if of its threshold, and nothing said otherwise)."""
    _project_with_pairs(oscd_crop)
    dock = panel()
    dock.form.polygons_check.setChecked(True)
    dock.form.threshold_slider.setValue(position_of(0.3))
    _run(dock)
    [polygons] = [node.layer() for node in _group()[0].findLayers() if node.layer().type() == 0]  # vector
    assert polygons.name() == "Change polygons (threshold 0.30)"
    layer = dock.latest.layer()
    confidence = read(layer.customProperty("deepcl/confidence"))
    new_threshold = float(np.round(np.median(confidence[confidence >= 0]), 2))
    first_source = layer.source()
    dock.form.threshold_slider.setValue(position_of(new_threshold))
    assert dock.form.threshold_label.text() == f"{new_threshold:.2f}"
    wait_for(lambda: layer.source() != first_source, timeout=30)
    assert not dock.is_running()  # no detection was started
    change = read(layer.source())
    np.testing.assert_array_equal(change, np.where(confidence < 0, 255, confidence >= new_threshold))
    assert layer.renderer().type() == "paletted" and layer.name() == "Change"
    assert dock.form.summary_label.text().endswith(
        f"(re-classified; detection took {dock.latest.run_seconds:.1f} s). The change polygons stay at the run's "
        "threshold, 0.30.")
    assert f"threshold {new_threshold:.2f} (re-classified" in dock.form.summary_label.text()
    percent = 100 * (change == 1).sum() / (change != 255).sum()
    assert f"({percent:.2f} %)" in dock.form.summary_label.text()


def test_moving_the_threshold_back_shows_the_runs_own_map_again(panel, oscd_crop):
    """No copy of the run's map is written for its own threshold, and the re-classified one is deleted."""
    _project_with_pairs(oscd_crop)
    dock = panel()
    _run(dock)
    layer, run_summary = dock.latest.layer(), dock.form.summary_label.text()
    run_map, run_position = Path(layer.source()), dock.form.threshold_slider.value()
    dock.form.threshold_slider.setValue(run_position + 3)
    wait_for(lambda: Path(layer.source()) != run_map, timeout=30)
    reclassified = Path(layer.source())
    dock.form.threshold_slider.setValue(run_position)
    wait_for(lambda: Path(layer.source()) == run_map, timeout=30)
    assert not reclassified.exists() and dock.latest.task is None
    assert sorted(path.name for path in run_map.parent.glob("change*.tif")) == [run_map.name]
    assert dock.form.summary_label.text() == run_summary


def test_a_reclassification_that_ends_after_the_next_run_is_not_shown_on_its_map(panel, oscd_crop, monkeypatch):
    """The slider moved after a run, and another run started before the re-classification of the
    first ended (it takes seconds on a large map: here made slow): the second run's Change layer
    keeps its own map, and the first run's re-classified map, shown by no layer, is deleted. It was
    put on the second run's layer, with the first run's figures in the summary."""
    from deepcl_qgis.dock import reclassify_task

    real = reclassify_task.reclassify

    def slow_reclassify(*args, **kwargs):
        time.sleep(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(reclassify_task, "reclassify", slow_reclassify)
    _project_with_pairs(oscd_crop)
    dock = panel()
    _run(dock)
    first = dock.latest.layer()
    first_map = first.source()
    dock.form.threshold_slider.setValue(dock.form.threshold_slider.value() + 3)
    wait_for(lambda: dock.latest.task is not None)
    dock.form.before_combo.setLayer(_layer_named("levir before"))
    dock.form.after_combo.setLayer(_layer_named("levir after"))
    _run(dock)
    second = dock.latest.layer()
    second_map, second_summary = second.source(), dock.form.summary_label.text()
    wait_for(lambda: dock.latest.task is None, timeout=60)
    assert second.source() == second_map and dock.form.summary_label.text() == second_summary
    assert first.source() == first_map
    assert not list(Path(first_map).parent.glob("change_t*.tif"))


def _show_on_map(canvas, before, columns, rows, crs: str) -> None:
    """The map, in ``crs``, over ``before``'s pixels ``columns`` × ``rows`` (half-open ranges)."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle

    x0, dx, _, y0, _, dy = gdal.Open(before.source()).GetGeoTransform()
    area = QgsRectangle(x0 + columns[0] * dx, y0 + rows[1] * dy, x0 + columns[1] * dx, y0 + rows[0] * dy)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(crs))
    canvas.setExtent(QgsCoordinateTransform(before.crs(), canvas.mapSettings().destinationCrs(),
                                            QgsProject.instance()).transformBoundingBox(area))


def test_map_view_only_detects_in_what_the_map_shows(panel, oscd_crop, qgis_iface):
    """The 160² OSCD crop (EPSG:4326) under a map in Web Mercator showing about its middle: the
    outputs cover the shown pixels, and no more than a pixel beyond them on any side. (The canvas
    widens the area asked for to its own proportions: the area is kept small.)"""
    from qgis.core import QgsCoordinateTransform, QgsProject

    from deepcl_qgis.dock.form import MAP_VIEW

    before, _ = _project_with_pairs(oscd_crop)
    canvas = qgis_iface.mapCanvas()
    _show_on_map(canvas, before, (70, 90), (70, 90), "EPSG:3857")
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(MAP_VIEW))
    _run(dock)
    assert dock.form.error_label.text() == ""
    change = gdal.Open(_layer_named("Change").source())
    x0, dx, _, y0, _, dy = change.GetGeoTransform()
    shown = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), before.crs(),
                                   QgsProject.instance()).transformBoundingBox(canvas.extent())
    shown = shown.intersect(before.extent())
    eps = 1e-6 * dx  # the view's edges may fall on pixel edges, give or take rounding
    left, right = x0 - eps, x0 + change.RasterXSize * dx + eps
    top, bottom = y0 + eps, y0 + change.RasterYSize * dy - eps
    assert left <= shown.xMinimum() < left + dx and right - dx < shown.xMaximum() <= right
    assert bottom <= shown.yMinimum() < bottom - dy and top + dy < shown.yMaximum() <= top
    assert change.RasterXSize < 160 and change.RasterYSize < 160  # the map showed part of the crop
    assert dock.form.summary_label.text().startswith("Changed in the map view:")
    dock.form.threshold_slider.setValue(position_of(0.3))  # the re-classified summary says so too
    wait_for(lambda: "re-classified" in dock.form.summary_label.text(), timeout=30)
    assert dock.form.summary_label.text().startswith("Changed in the map view:")


def test_a_map_view_away_from_the_before_image_is_refused_in_words(panel, oscd_crop, qgis_iface):
    from deepcl_qgis.dock.form import MAP_VIEW

    before, _ = _project_with_pairs(oscd_crop)
    _show_on_map(qgis_iface.mapCanvas(), before, (400, 500), (0, 100), "EPSG:4326")  # east of the crop
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(MAP_VIEW))
    dock.form.run_button.click()
    assert not dock.is_running()
    assert dock.form.error_label.text().startswith("The map view shows none of the before image 'abudhabi_20150801'")
    assert not list(Path(dock.form.output_widget.filePath()).iterdir())  # no run folder was made


def _squares_layer(before, squares):
    """A memory polygon layer in the before layer's CRS with one square per (column, row, side) in pixels."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer

    layer = QgsVectorLayer(f"Polygon?crs={before.crs().authid()}", "districts", "memory")
    features = []
    for wkt in square_polygons(before.source(), squares):
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_inside_polygons_detects_in_the_selected_ones_or_all(panel, oscd_crop):
    """Two 50-pixel squares over the 160² OSCD crop: with the second selected, the outputs cover it
    alone; with none selected, both, and nodata between them."""
    from deepcl_qgis.dock.form import POLYGONS

    before, _ = _project_with_pairs(oscd_crop)
    squares = _squares_layer(before, [(10, 10, 50), (100, 100, 50)])
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(POLYGONS))
    assert not dock.form.area_layer_combo.isHidden()
    dock.form.area_layer_combo.setLayer(squares)
    squares.selectByIds([squares.allFeatureIds()[1]])
    _run(dock)
    assert dock.form.error_label.text() == ""
    change = read(_layer_named("Change").source())
    assert change.shape == (50, 50) and (change != 255).all()
    assert dock.form.summary_label.text().startswith("Changed inside the polygons:")
    squares.removeSelection()
    _run(dock)
    both = read(dock.latest.layer().source())
    assert both.shape == (140, 140)
    assert (both[:50, :50] != 255).all() and (both[90:, 90:] != 255).all()
    assert (both[:50, 90:] == 255).all() and (both[90:, :50] == 255).all()  # between the squares: nodata
    dock.shutdown()
    from deepcl_qgis.dock.panel import DeepCLDock

    again = DeepCLDock(dock.iface)  # the area and its layer are remembered
    assert again.form.area_combo.currentData() == POLYGONS and again.form.area_layer_combo.currentLayer() is squares
    assert not again.form.area_layer_combo.isHidden()
    again.shutdown()
    _delete(again)


def test_inside_polygons_never_offers_the_panels_own_change_polygons(panel, oscd_crop):
    """After a run that wrote change polygons, "Inside polygons" chose them (the first polygon layer)
    over the user's layer: the next run looked only inside the last run's changes."""
    from deepcl_qgis.dock.form import POLYGONS

    before, _ = _project_with_pairs(oscd_crop)
    dock = panel()
    dock.form.polygons_check.setChecked(True)
    _run(dock)
    from qgis.core import QgsProject

    assert dock.form.error_label.text() == ""
    assert [layer for layer in QgsProject.instance().mapLayers().values() if layer.name().startswith("Change polygons")]
    districts = _squares_layer(before, [(10, 10, 50)])
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(POLYGONS))
    offered = [dock.form.area_layer_combo.layer(index) for index in range(dock.form.area_layer_combo.count())]
    assert dock.form.area_layer_combo.currentLayer() is districts and offered == [None, districts]
    dock.shutdown()
    _delete(dock)


def test_inside_polygons_without_a_polygon_layer_is_refused_in_words(panel, oscd_crop):
    from deepcl_qgis.dock.form import POLYGONS

    _project_with_pairs(oscd_crop)
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(POLYGONS))
    dock.form.run_button.click()
    assert not dock.is_running()
    assert dock.form.error_label.text() == "Choose the polygon layer to detect inside, or another Area."


def test_inside_a_polygon_layer_without_polygons_is_refused_in_words_and_the_panel_stays_usable(panel, oscd_crop,
                                                                                                 tmp_path):
    """A new, still empty layer of districts: its infinite extent ended the check in an OverflowError,
    the panel was left 'running' (Detect did nothing until QGIS restarted) and the run's folder stayed."""
    from deepcl_qgis.dock.form import POLYGONS, WHOLE_IMAGE

    before, _ = _project_with_pairs(oscd_crop)
    empty = _squares_layer(before, [])
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(POLYGONS))
    dock.form.area_layer_combo.setLayer(empty)
    dock.form.run_button.click()
    assert not dock.is_running()
    assert dock.form.error_label.text() == ("The mask layer districts holds no polygon; draw the area to detect inside, "
                                            "or choose another layer.")
    assert list((tmp_path / "out").iterdir()) == []
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(WHOLE_IMAGE))
    _run(dock)
    assert dock.form.summary_label.text().startswith("Changed")


def test_a_removed_polygon_layer_leaves_no_other_in_its_place(panel, oscd_crop):
    """The polygon combo moved to the next polygon layer when the chosen one was removed, and the
    next run detected inside polygons nobody chose."""
    from qgis.core import QgsProject

    from deepcl_qgis.dock.form import POLYGONS

    before, _ = _project_with_pairs(oscd_crop)
    chosen, other = _squares_layer(before, [(10, 10, 50)]), _squares_layer(before, [(100, 100, 50)])
    dock = panel()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(POLYGONS))
    assert dock.form.area_layer_combo.currentLayer() in (chosen, other)  # one is offered when the Area is chosen
    dock.form.area_layer_combo.setLayer(chosen)
    QgsProject.instance().removeMapLayer(chosen.id())
    assert dock.form.area_layer_combo.currentLayer() is None
    dock.form.run_button.click()
    assert not dock.is_running()
    assert dock.form.error_label.text() == "Choose the polygon layer to detect inside, or another Area."


def test_cancel_mid_run_leaves_nothing(panel, tmp_path):
    from qgis.core import QgsApplication, QgsProject

    beihai = pair("oscd", "beihai")  # 772 × 902 pixels: 15 × 15 tiles of 64
    add_raster(image(beihai, "before"), "beihai before")
    add_raster(image(beihai, "after"), "beihai after")
    dock = panel()
    dock.form.tile_spin.setValue(64)
    dock.form.overlap_spin.setValue(0)
    dock.form.batch_spin.setValue(1)
    layers_before = set(QgsProject.instance().mapLayers())
    dock.form.run_button.click()
    assert dock.is_running(), dock.form.error_label.text()
    wait_for(lambda: dock.form.progress_bar.value() > 0)
    dock.form.cancel_button.click()
    started = time.monotonic()
    wait_for(lambda: not dock.is_running(), timeout=60)
    assert time.monotonic() - started < 20  # stops at the next tile, not at the end
    assert set(QgsProject.instance().mapLayers()) == layers_before and not _group()
    assert not [p for p in (tmp_path / "out").rglob("*")], "files left behind"
    assert "Cancelled" in dock.form.status_label.text() and dock.form.error_label.text() == ""
    assert dock.form.run_button.isEnabled() and not dock.form.cancel_button.isVisible()
    wait_for(lambda: QgsApplication.taskManager().count() == 0 or not QgsApplication.taskManager().activeTasks())


def test_errors_are_shown_in_words_in_the_panel_and_message_bar(panel, qgis_iface):
    from qgis.core import Qgis

    folder = pair("dsifn", "0_2")
    layer = add_raster(image(folder, "before"), "dsifn before")
    dock = panel()
    dock.form.before_combo.setLayer(layer)
    dock.form.after_combo.setLayer(layer)
    qgis_iface.messageBar().clear_messages()
    dock.form.run_button.click()
    assert not dock.is_running()
    assert "same layer" in dock.form.error_label.text()
    assert any("same layer" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    assert not list(Path(dock.form.output_widget.filePath()).iterdir())  # no run folder was made


def test_choices_are_remembered_between_sessions(panel, oscd_crop):
    from qgis.PyQt.QtCore import Qt

    before, after = _project_with_pairs(oscd_crop)
    dock = panel()
    dock.swap_layers()
    assert dock.form.before_combo.currentLayer() is after
    dock.form.threshold_slider.setValue(position_of(0.37))
    dock.form.polygons_check.setChecked(True)
    dock.form.min_area_spin.setValue(250.0)
    dock.form.area_combo.setCurrentIndex(1)
    for index in range(3):  # red, green, blue of the layer now 'before'
        dock.form.bands_before.setItemCheckState(index, Qt.Checked)
    dock.shutdown()
    from deepcl_qgis.dock.panel import DeepCLDock

    again = DeepCLDock(dock.iface)
    assert again.form.before_combo.currentLayer() is after and again.form.after_combo.currentLayer() is before
    assert again.threshold() == pytest.approx(0.37) and again.form.threshold_label.text() == "0.37"
    assert again.form.polygons_check.isChecked() and again.form.min_area_spin.value() == 250.0
    assert again.form.area_combo.currentIndex() == 1
    assert again.form.tile_spin.value() == FAST["tile"] and again.form.device_combo.currentData() == "cpu"
    assert again.form.model_widget.filePath() == dock.form.model_widget.filePath()
    # The bands too (they were forgotten, and the run went back to bands found automatically)
    assert again.form.bands_before.checkedItemsData() == ["1", "2", "3"] and again.form.bands_after.checkedItems() == []
    again.shutdown()
    _delete(again)


def test_a_remembered_device_this_machine_cannot_use_gives_auto(panel, qgis_iface):
    """A GPU remembered from another session (since gone, or a CPU-only build installed since) was
    chosen greyed out, and the run failed with "CUDA is not available"."""
    import torch

    from deepcl_qgis.dock.settings import load_choices, save_choices

    if torch.cuda.is_available():
        pytest.skip("CUDA is usable here")
    from deepcl_qgis.dock.panel import DeepCLDock

    panel()  # the settings cleared, after the test too
    choices = load_choices()
    choices.device = "cuda"
    save_choices(choices)
    dock = DeepCLDock(qgis_iface)
    combo = dock.form.device_combo
    assert not combo.model().item(combo.findData("cuda")).isEnabled()
    assert combo.currentData() == "auto"
    dock.shutdown()
    _delete(dock)


def test_the_models_own_threshold_is_remembered_as_the_models(panel, oscd_crop, tiny_model_path, tmp_path):
    """Left at the model's threshold, the slider comes back at the model's threshold for the next
    imagery, not at the number the last one had, and the run asks for the model's own."""
    from deepcl_core.model_file import load_model, save_model

    bundle = load_model(tiny_model_path)
    bundle.threshold, bundle.thresholds_by_pixel_size = 0.35, ((5.0, 0.07),)
    save_model(bundle, tmp_path / "by_pixel_size.pt")
    oscd_before, _ = _project_with_pairs(oscd_crop)
    dock = panel()
    dock.form.model_widget.setFilePath(str(tmp_path / "by_pixel_size.pt"))
    assert dock.form.before_combo.currentLayer() is oscd_before
    assert dock.threshold() == dock._model_threshold() and dock.requested_threshold() is None
    assert dock.current_choices().threshold == -1.0
    dock.shutdown()  # saves the choices
    from deepcl_qgis.dock.panel import DeepCLDock

    again = DeepCLDock(dock.iface)
    again.form.before_combo.setLayer(_layer_named("levir before"))  # other imagery: the model's other threshold
    assert again.threshold() == again._model_threshold() != dock._model_threshold()
    again.form.threshold_slider.setValue(again.form.threshold_slider.value() + 2)  # the user's choice
    assert again.current_choices().threshold == again.threshold() == again.requested_threshold()
    assert again.threshold() != again._model_threshold()
    again.shutdown()
    _delete(again)


def test_device_chooser_says_what_was_found(panel):
    import torch

    dock = panel()
    combo = dock.form.device_combo
    assert [combo.itemData(i) for i in range(combo.count())][:2] == ["auto", "cpu"]
    if not torch.cuda.is_available():
        assert dock.form.device_label.text().startswith("No GPU:")
        assert not combo.model().item(combo.findData("cuda")).isEnabled()
    assert not dock.form.torch_box.isVisible() and dock.form.run_button.isEnabled()


def test_a_pair_added_after_the_panel_opened_is_offered(panel):
    dock = panel()
    assert dock.form.before_combo.currentLayer() is None
    folder = pair("dsifn", "1_1")
    after = add_raster(image(folder, "after"), "dsifn_1_1 after")
    before = add_raster(image(folder, "before"), "dsifn_1_1 before")
    assert dock.form.before_combo.currentLayer() is before and dock.form.after_combo.currentLayer() is after


def test_the_threshold_follows_the_chosen_model(panel, tiny_model_path, tmp_path):
    """A model brings the threshold chosen on its validation pairs; the slider starts there."""
    from deepcl_core.detect import bundled_model_path
    from deepcl_core.model_file import load_model, save_model

    dock = panel()
    bundle = load_model(tiny_model_path)
    bundle.threshold = 0.35
    save_model(bundle, tmp_path / "threshold_035.pt")
    dock.form.model_widget.setFilePath(str(tmp_path / "threshold_035.pt"))
    assert dock.threshold() == pytest.approx(0.35) and dock.form.threshold_label.text() == "0.35"
    dock.form.model_widget.setFilePath("")  # back to the bundled model
    # Its calibrated threshold lies between the slider's round values: the stop nearest it gives it exactly.
    calibrated = load_model(bundled_model_path()).threshold
    assert calibrated not in THRESHOLDS and dock.threshold() == calibrated
    assert dock.form.threshold_label.text() == f"{calibrated:.3f}"
    position = dock.form.threshold_slider.value()
    dock.form.threshold_slider.setValue(position + 1)
    assert dock.threshold() == THRESHOLDS[position + 1]
    dock.form.threshold_slider.setValue(position)
    assert dock.threshold() == calibrated and dock.form.threshold_label.text() == f"{calibrated:.3f}"


def test_after_installing_pytorch_the_slider_shows_the_models_threshold(panel, oscd_crop, monkeypatch):
    """Without torch the model's threshold cannot be read and 0.5 stands in; after Install PyTorch
    the slider stayed there, and the first run was re-classified at 0.50 instead of the bundled
    model's 0.074 for 10 m imagery (0.02 % changed instead of 0.19 %)."""
    from deepcl_qgis import pair_checks
    from deepcl_qgis.dock.install_dialog import InstallDialog
    from deepcl_qgis.paths import bundled_model_path

    if not bundled_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    _project_with_pairs(oscd_crop)
    with_torch = pair_checks.loaded_model

    def without_torch(path):
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(pair_checks, "loaded_model", without_torch)
    dock = panel()
    dock.form.model_widget.setFilePath("")  # the bundled model
    assert dock.threshold() == 0.5
    monkeypatch.setattr(pair_checks, "loaded_model", with_torch)  # what the installer makes importable
    monkeypatch.setattr(InstallDialog, "exec_", lambda dialog: 0)
    dock.open_installer()
    expected = with_torch(str(bundled_model_path())).threshold_for(10.0)
    assert expected < 0.1 and dock.threshold() == pytest.approx(expected)
    assert dock.requested_threshold() is None  # the model's own, not a user's choice


def test_the_threshold_follows_the_before_layers_pixel_size(panel, oscd_crop, tiny_model_path, tmp_path):
    """A model with its own threshold for coarse imagery: the slider shows it for the 10 m OSCD
    layer, the general one for the LEVIR PNG, and keeps the user's value while the class stays."""
    from deepcl_core.model_file import load_model, save_model

    bundle = load_model(tiny_model_path)
    bundle.threshold, bundle.thresholds_by_pixel_size = 0.35, ((5.0, 0.07),)
    save_model(bundle, tmp_path / "by_pixel_size.pt")
    oscd_before, _ = _project_with_pairs(oscd_crop)
    levir_before = _layer_named("levir before")
    dock = panel()
    dock.form.model_widget.setFilePath(str(tmp_path / "by_pixel_size.pt"))
    assert dock.form.before_combo.currentLayer() is oscd_before and dock.threshold() == pytest.approx(0.07)
    dock.form.before_combo.setLayer(levir_before)
    assert dock.threshold() == pytest.approx(0.35)
    dock.form.threshold_slider.setValue(position_of(0.40))  # the user's choice
    dock.form.before_combo.setLayer(_layer_named("levir after"))  # same class: kept
    assert dock.threshold() == pytest.approx(0.40)
    dock.form.before_combo.setLayer(oscd_before)
    assert dock.threshold() == pytest.approx(0.07)


def test_the_minimum_area_is_in_pixels_for_images_without_georeference(panel, oscd_crop):
    """The engine drops polygons under the minimum area in m², or in pixels where the image has no
    georeference (the LEVIR PNGs): the panel said m² for both, so 100 "m²" on 0.5 m pixels kept 25 m²."""
    oscd_before, _ = _project_with_pairs(oscd_crop)
    dock = panel()
    assert dock.form.before_combo.currentLayer() is oscd_before and dock.form.min_area_spin.suffix() == " m²"
    dock.form.before_combo.setLayer(_layer_named("levir before"))
    assert dock.form.min_area_spin.suffix() == " pixels"
    dock.swap_layers()  # the OSCD after image is now the before one
    assert dock.form.min_area_spin.suffix() == " m²"


def _layer_named(name: str):
    from qgis.core import QgsProject

    return QgsProject.instance().mapLayersByName(name)[0]


def _long_run(dock):
    """The beihai pair in 64-px tiles: long enough to act while it runs."""
    beihai = pair("oscd", "beihai")
    before, after = add_raster(image(beihai, "before"), "beihai before"), add_raster(image(beihai, "after"),
                                                                                     "beihai after")
    dock.form.before_combo.setLayer(before)
    dock.form.after_combo.setLayer(after)
    dock.form.tile_spin.setValue(64)
    dock.form.overlap_spin.setValue(0)
    dock.form.batch_spin.setValue(1)
    dock.form.run_button.click()
    assert dock.is_running(), dock.form.error_label.text()
    wait_for(lambda: dock.form.progress_bar.value() > 0)
    return before, after


def test_an_output_folder_that_cannot_be_written_is_refused_in_words(panel, oscd_crop, tmp_path):
    """A file chosen as the folder (a read-only folder ends the same way): words, not a traceback."""
    _project_with_pairs(oscd_crop)
    dock = panel()
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("")
    dock.form.output_widget.setFilePath(str(not_a_folder))
    dock.form.run_button.click()
    assert not dock.is_running()
    assert dock.form.error_label.text().startswith(f"The results cannot be written in {not_a_folder}")
    assert "Choose another output folder." in dock.form.error_label.text()


def test_the_slider_moved_during_a_run_is_applied_when_it_ends(panel):
    dock = panel()
    _long_run(dock)
    run_threshold = dock.threshold()
    moved = 0.7 if run_threshold < 0.6 else 0.3
    dock.form.threshold_slider.setValue(position_of(moved))
    wait_for(lambda: not dock.is_running())
    layer = dock.latest.layer()
    wait_for(lambda: float(layer.customProperty("deepcl/threshold")) == pytest.approx(moved), timeout=60)
    confidence = read(layer.customProperty("deepcl/confidence"))
    np.testing.assert_array_equal(read(layer.source()), np.where(confidence < 0, 255, confidence >= moved))


def test_inputs_removed_during_a_run_keep_their_names_and_no_box_takes_the_other(panel):
    from qgis.core import QgsProject

    dock = panel()
    before, after = _long_run(dock)
    QgsProject.instance().removeMapLayer(after.id())
    assert dock.form.after_combo.currentLayer() is None and dock.form.before_combo.currentLayer() is before
    QgsProject.instance().removeMapLayer(before.id())
    wait_for(lambda: not dock.is_running())
    assert [g.name() for g in _group()] == ["DeepCL changes: beihai before → beihai after"]


def test_clearing_the_project_cancels_the_run(panel):
    from qgis.core import QgsProject

    dock = panel()
    _long_run(dock)
    QgsProject.instance().clear()
    wait_for(lambda: not dock.is_running(), timeout=60)
    assert not QgsProject.instance().mapLayers() and not _group()
    assert "Cancelled" in dock.form.status_label.text()


def test_closing_the_project_clears_the_last_runs_summary_and_messages(panel, oscd_crop):
    """The summary spoke of layers that are gone with the project it was in."""
    from qgis.core import QgsProject

    _project_with_pairs(oscd_crop)
    dock = panel()
    _run(dock)
    assert "Changed" in dock.form.summary_label.text()
    dock.show_error("an earlier error")
    QgsProject.instance().clear()
    assert (dock.form.summary_label.text(), dock.form.error_label.text(), dock.form.status_label.text()) == ("", "", "")
    dock.form.threshold_slider.setValue(dock.form.threshold_slider.value() + 5)  # nothing left to re-classify
    wait_for(lambda: dock.latest.task is None)
    assert dock.form.summary_label.text() == "" and dock.latest.layer() is None


def test_a_run_going_when_the_panel_goes_ends_and_leaves_nothing(panel, tmp_path):
    """The plugin unloaded (or reloaded) during a run: the run is cancelled, ends without the panel
    and removes its folder. The empty run folder was left in the output folder."""
    from deepcl_qgis.dock import panel as panel_module

    dock = panel()
    _long_run(dock)
    assert [path.name for path in (tmp_path / "out").iterdir()] == [dock.run_folder.name]
    dock.shutdown()
    _delete(dock)
    wait_for(lambda: not panel_module._ENDING_RUNS, timeout=60)
    assert list((tmp_path / "out").iterdir()) == [] and not _group()


def test_only_layers_gdal_reads_are_offered(panel, oscd_crop):
    from qgis.core import QgsProject, QgsRasterLayer

    _project_with_pairs(oscd_crop)
    QgsProject.instance().addMapLayer(QgsRasterLayer("url=http://localhost:9/wms&layers=x&crs=EPSG:4326&format=image/png",
                                                     "a web map", "wms"), True)
    dock = panel()
    offered = [dock.form.before_combo.itemText(i) for i in range(dock.form.before_combo.count())]
    assert "abudhabi_20150801" in offered and not any("a web map" in text for text in offered)


def test_a_basemap_added_after_the_pair_leaves_the_pair_preselected(panel, oscd_crop):
    """An XYZ basemap (valid, newest) was taken for the after image's partner: before = the newer
    image, after = empty."""
    from qgis.core import QgsProject, QgsRasterLayer

    before, after = _project_with_pairs(oscd_crop)
    basemap = QgsRasterLayer("type=xyz&url=https://tile.openstreetmap.org/{z}/{x}/{y}.png&zmax=19&zmin=0",
                             "OpenStreetMap", "wms")
    assert basemap.isValid()
    QgsProject.instance().addMapLayer(basemap)
    dock = panel()
    assert (dock.form.before_combo.currentLayer(), dock.form.after_combo.currentLayer()) == (before, after)


def test_the_panels_results_are_not_offered_as_inputs(panel, oscd_crop):
    _project_with_pairs(oscd_crop)
    dock = panel()
    _run(dock)
    for combo in (dock.form.before_combo, dock.form.after_combo):
        offered = [combo.itemText(i) for i in range(combo.count())]
        assert "abudhabi_20150801" in offered and not any(t.startswith(("Change", "Confidence")) for t in offered)


def test_bands_are_read_in_the_order_they_are_checked(panel, oscd_crop, tmp_path):
    """A stack of blue, green, red and near infrared: checking band 3, then 2, then 1 ran with
    bands 1, 2, 3 (blue read as red), the box's own order, and without a warning since the bands
    were chosen by hand; the swap button dropped both layers' choices."""
    from osgeo import gdal
    from qgis.PyQt.QtCore import Qt

    for role in ("before", "after"):
        gdal.Translate(str(tmp_path / f"{role}_bgrn.tif"), image(oscd_crop, role), bandList=[3, 2, 1, 4])
    before, after = add_raster(str(tmp_path / "before_bgrn.tif"), "stack 2015"), add_raster(
        str(tmp_path / "after_bgrn.tif"), "stack 2018")
    dock = panel()
    dock.form.before_combo.setLayer(before)
    dock.form.after_combo.setLayer(after)
    for combo in (dock.form.bands_before, dock.form.bands_after):
        for band in (3, 2, 1):  # red, green, blue, as the model reads them
            combo.setItemCheckState(combo.findData(band), Qt.Checked)
    dock.form.bands_after.setItemCheckState(dock.form.bands_after.findData(2), Qt.Unchecked)
    dock.form.bands_after.setItemCheckState(dock.form.bands_after.findData(2), Qt.Checked)  # now last
    dock.run_folder = tmp_path / "run"  # as a run sets it
    parameters = dock.parameters()
    assert parameters["BANDS_BEFORE"] == [3, 2, 1] and parameters["BANDS_AFTER"] == [3, 1, 2]
    dock.form.bands_before.resize(400, 30)  # the box rewrote its text in the file's order when resized
    combo = dock.form.bands_before
    assert combo.lineEdit().text() == ", ".join(combo.itemText(combo.findData(band)) for band in (3, 2, 1))
    dock.swap_layers()
    assert dock.form.before_combo.currentLayer() is after and dock.form.bands_before.bands() == [3, 1, 2]
    assert dock.form.bands_after.bands() == [3, 2, 1]
    dock.shutdown()  # and remembered in order
    from deepcl_qgis.dock.panel import DeepCLDock

    again = DeepCLDock(dock.iface)
    assert again.form.bands_before.bands() == [3, 1, 2] and again.form.bands_after.bands() == [3, 2, 1]
    again.shutdown()
    _delete(again)


def test_the_summary_says_how_much_of_the_image_had_no_data(panel, oscd_crop, tmp_path):
    """An after image covering half of the before one (a swath edge, clouds of Level-2A): the summary
    gave the changed share of the other half only, and nothing said half was not looked at."""
    source = gdal.Open(image(oscd_crop, "after"))
    half = crop(image(oscd_crop, "after"), tmp_path / "after_west_half.tif", 0, 0, source.RasterXSize // 2,
                source.RasterYSize)
    before = add_raster(image(oscd_crop, "before"), "abudhabi_20150801")
    after = add_raster(str(half), "abudhabi_20180328")
    dock = panel()
    dock.form.before_combo.setLayer(before)
    dock.form.after_combo.setLayer(after)
    _run(dock)
    summary = dock.form.summary_label.text()
    unseen = float(summary.split(" % of the image has no data in one of the dates")[0].rsplit(" ", 1)[-1])
    assert 40 <= unseen <= 60, summary


def test_the_engines_errors_read_as_sentences_in_the_panel(panel, oscd_crop, qgis_iface, tmp_path):
    """An engine error (here an after image that is all nodata) began in lower case, where the
    panel's own messages are sentences."""
    from qgis.core import Qgis

    before = image(oscd_crop, "before")
    empty = gdal.Translate(str(tmp_path / "empty_after.tif"), before, noData=0)
    for index in range(1, empty.RasterCount + 1):
        empty.GetRasterBand(index).Fill(0)
    empty = None
    dock = panel()
    dock.form.before_combo.setLayer(add_raster(before, "before"))
    dock.form.after_combo.setLayer(add_raster(str(tmp_path / "empty_after.tif"), "after"))
    qgis_iface.messageBar().clear_messages()
    dock.form.run_button.click()
    wait_for(lambda: not dock.is_running())
    assert dock.form.error_label.text().startswith("The after image has no valid pixel")
    assert any("The after image has no valid pixel" in m
               for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
