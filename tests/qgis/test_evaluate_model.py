"""deepcl:evaluatemodel: metrics against label rasters and polygons, and the model + pair mode."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr

from core_test_helpers import crop
from deepcl_core.metrics import Confusion
from plugin_test_helpers import (check_message, error_recording_feedback, image, label_polygons, pair, read, run,
                                 squares_package)

ALG = "deepcl:evaluatemodel"


def _change_map(tmp_path, tiny_model, folder, threshold=0.4) -> str:
    result = run("deepcl:detectchanges", {
        "BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
        "THRESHOLD": threshold, "DEVICE": "cpu", "TILE_SIZE": 128, "OVERLAP": 16,
        "CHANGE": str(tmp_path / "change.tif"), "CONFIDENCE": str(tmp_path / "confidence.tif")})
    return result["CHANGE"]


def test_metrics_against_a_label_raster(deepcl_provider, tiny_model, tmp_path):
    folder = pair("levir", "test_77_0512_0256")
    change = _change_map(tmp_path, tiny_model, folder)
    result = run(ALG, {"CHANGE": change, "REFERENCE": image(folder, "label"), "OUTPUT_HTML": str(tmp_path / "r.html")})
    expected = Confusion.of(read(change) == 1, read(image(folder, "label")) > 0).metrics()
    for key in ("precision", "recall", "f1", "iou", "oa", "kappa", "tp", "fp", "fn", "tn"):
        assert result[key.upper()] == pytest.approx(expected[key])
    assert result["TP"] + result["FP"] + result["FN"] + result["TN"] == 256 * 256
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "F1 score" in report and f"{expected['f1']:.4f}" in report
    assert result["BRIER"] is None and "Brier" not in report  # a change map alone has no confidence
    # A second report into the same file (batch rows with alike names) is said, as detection says it
    again = error_recording_feedback()
    run(ALG, {"CHANGE": change, "REFERENCE": image(folder, "label"), "OUTPUT_HTML": str(tmp_path / "r.html")}, again)
    assert again.warnings == [f"{tmp_path / 'r.html'} existed and was replaced by this run's output."]


def test_a_map_rightly_finding_no_change_reads_not_applicable_not_0(deepcl_provider, tmp_path):
    """Against a reference without change, a map without change scored "F1 0.0000" in the report
    and the log, as if it had failed; the ratios without pixels to divide by are said to be so."""
    from plugin_test_helpers import error_recording_feedback

    label = image(pair("levir", "train_386_0512_0768"), "label")
    assert read(label).max() == 0
    feedback = error_recording_feedback()
    messages = []
    feedback.pushInfo = messages.append
    result = run(ALG, {"CHANGE": label, "REFERENCE": label, "OUTPUT_HTML": str(tmp_path / "r.html")}, feedback)
    assert (result["TP"], result["FP"], result["FN"], result["OA"]) == (0, 0, 0, 1.0)
    # No number for them in the outputs either, as `deepcl evaluate` gives null (they were 0.0)
    assert [result[key] for key in ("PRECISION", "RECALL", "F1", "IOU")] == [None] * 4
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<td>F1 score</td><td>n/a (no change in the map or the reference)</td>" in report
    assert "<td>Precision</td><td>n/a (nothing detected as changed)</td>" in report
    assert "<td>Overall accuracy</td><td>1.0000</td>" in report
    assert any(line.startswith("precision: n/a (nothing detected as changed), recall: n/a (no change in the "
                               "reference), f1: n/a") for line in messages)


def test_a_0_255_change_map_counts_its_255_as_change(deepcl_provider, tiny_model, tmp_path):
    """Other tools write change as 255 (no nodata): the same metrics as our 0/1 map of it."""
    folder = pair("levir", "test_77_0512_0256")
    change = _change_map(tmp_path, tiny_model, folder)
    ours = gdal.Open(change)
    scaled = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "255.tif"), ours.RasterXSize, ours.RasterYSize)
    scaled.GetRasterBand(1).WriteArray((read(change) == 1).astype("uint8") * 255)
    scaled = None
    expected = run(ALG, {"CHANGE": change, "REFERENCE": image(folder, "label")})
    result = run(ALG, {"CHANGE": str(tmp_path / "255.tif"), "REFERENCE": image(folder, "label")})
    assert result["TP"] == expected["TP"] > 0 and result["F1"] == expected["F1"]


def test_nothing_in_common_or_a_confidence_map_is_refused(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """Kappa 1 over no pixel read as perfect agreement; a confidence map read as all unchanged."""
    from qgis.core import QgsProcessingException

    _change_map(tmp_path, tiny_model, oscd_crop)
    label = gdal.Open(image(oscd_crop, "label"))
    x0, dx, rx, y0, ry, dy = label.GetGeoTransform()
    elsewhere = gdal.Translate(str(tmp_path / "elsewhere.tif"), label)
    elsewhere.SetGeoTransform((x0 + 2 * dx * label.RasterXSize, dx, rx, y0, ry, dy))
    elsewhere = None
    with pytest.raises(QgsProcessingException, match="no valid pixel in common"):
        run(ALG, {"CHANGE": str(tmp_path / "change.tif"), "REFERENCE": str(tmp_path / "elsewhere.tif")})
    with pytest.raises(QgsProcessingException, match="not its confidence"):
        run(ALG, {"CHANGE": str(tmp_path / "confidence.tif"), "REFERENCE": image(oscd_crop, "label")})


def test_polygon_reference_matches_the_raster_reference(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    change = _change_map(tmp_path, tiny_model, oscd_crop, threshold=0.3)
    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")  # its changed (1) pixels
    by_raster = run(ALG, {"CHANGE": change, "REFERENCE": image(oscd_crop, "label")})
    by_polygons = run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": str(polygons)})
    assert by_raster["TP"] + by_raster["FN"] > 0
    for key in ("TP", "FP", "FN", "TN", "F1", "KAPPA"):
        assert by_polygons[key] == pytest.approx(by_raster[key])


def test_an_invalid_reference_polygon_is_refused_in_words_and_python_keeps_working(deepcl_provider, tiny_model,
                                                                                   tmp_path, oscd_crop):
    """QGIS's own invalid-geometry check raised through the feature iterator inside a generator: every
    line of Python in QGIS then failed ("SystemError: unknown opcode") until QGIS restarted."""
    import processing
    from qgis.core import QgsFeatureRequest, QgsProcessingContext, QgsProcessingException

    change = _change_map(tmp_path, tiny_model, oscd_crop, threshold=0.3)
    polygons = tmp_path / "changed.gpkg"
    label = gdal.Open(image(oscd_crop, "label"))
    vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(polygons))
    layer = vector.CreateLayer("changed", srs=label.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    x0, dx, _, y0, _, dy = label.GetGeoTransform()
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(  # a bowtie: self-intersecting
        f"POLYGON (({x0} {y0}, {x0 + 20 * dx} {y0 + 20 * dy}, {x0 + 20 * dx} {y0}, {x0} {y0 + 20 * dy}, {x0} {y0}))"))
    layer.CreateFeature(feature)
    vector = layer = feature = None
    context = QgsProcessingContext()  # as QGIS's default setting makes it: stop at an invalid geometry
    context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryAbortOnInvalid)
    with pytest.raises(QgsProcessingException, match="has an invalid geometry .*Fix geometries"):
        processing.run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": str(polygons)}, context=context)
    assert [n for n in range(3)] == [0, 1, 2]  # Python still works (a comprehension runs a new frame)


def test_polygons_are_burnt_without_gdal_warnings():
    """Every rasterisation (a polygon reference, training from layers) printed "Warning 1: Failed to
    fetch spatial reference on layer polygons …" on stderr."""
    from deepcl_qgis.rasterize import burn_polygons

    messages = []
    gdal.PushErrorHandler(lambda level, number, text: messages.append(text))
    try:
        square = ogr.CreateGeometryFromWkt("POLYGON ((500000 20, 500005 20, 500005 15, 500000 15, 500000 20))")
        burnt = burn_polygons(10, 10, (500000.0, 1.0, 0.0, 20.0, 0.0, -1.0), [square.ExportToWkb()])
    finally:
        gdal.PopErrorHandler()
    assert int(burnt.sum()) == 25 and burnt[:5, :5].all()
    assert messages == []


def test_model_and_pair_mode(deepcl_provider, tiny_model, tmp_path):
    from qgis.core import QgsProcessingUtils

    folder = pair("dsifn", "3_4")
    temporary_before = set(Path(QgsProcessingUtils.tempFolder()).rglob("*"))
    result = run(ALG, {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
                       "THRESHOLD": 0.4, "DEVICE": "cpu", "REFERENCE": image(folder, "label"),
                       "OUTPUT_HTML": str(tmp_path / "r.html")})
    # The report names what was evaluated (it said "detected by the model")
    assert f"detected by the model {tiny_model.name} between before and after" in \
        (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result["TP"] + result["FP"] + result["FN"] + result["TN"] == 256 * 256
    assert 0.0 <= result["F1"] <= 1.0 and 0.0 <= result["OA"] <= 1.0
    # The model's maps are removed with the run (they stayed in QGIS's temporary folder until it exited)
    assert set(Path(QgsProcessingUtils.tempFolder()).rglob("*")) - temporary_before == set()
    # Every declared output comes back, the report unasked for as None (its key was missing)
    from qgis.core import QgsApplication

    definitions = QgsApplication.processingRegistry().algorithmById(ALG).outputDefinitions()
    declared = {o.name() for o in definitions}
    # Named in words in a model's list of outputs (they read "OA", "TP", "Kappa")
    labels = {o.name(): o.description() for o in definitions}
    assert labels["OA"] == "Overall accuracy" and labels["TP"] == "Changed pixels found (true positives)"
    assert all(len(label) > 12 for label in labels.values())
    assert declared <= set(result) and result["OUTPUT_HTML"] == str(tmp_path / "r.html")
    unasked = run(ALG, {"CHANGE": image(folder, "label"), "REFERENCE": image(folder, "label")})
    assert declared <= set(unasked) and unasked["OUTPUT_HTML"] is None


def test_every_threshold_detection_takes_is_taken(deepcl_provider, tiny_model):
    """0.005 (a 10 m threshold; detection's THRESHOLD_USED in a model) was refused below 0.01."""
    from qgis.core import QgsApplication, QgsProcessingContext

    from deepcl_qgis.threshold_scale import THRESHOLDS

    folder = pair("dsifn", "3_4")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    for threshold in (THRESHOLDS[0], 0.005, THRESHOLDS[-1]):
        assert algorithm.checkParameterValues({
            "BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
            "THRESHOLD": threshold, "REFERENCE": image(folder, "label")}, QgsProcessingContext()) == (True, "")
    ranges = [(d.minimum(), d.maximum()) for d in (
        QgsApplication.processingRegistry().algorithmById(name).parameterDefinition("THRESHOLD")
        for name in ("deepcl:detectchanges", ALG))]
    assert ranges[0] == ranges[1]


def test_detections_warnings_reach_the_log(deepcl_provider, tiny_model, tmp_path):
    """Evaluating a model runs a detection, whose warnings (here: the model was never trained) go to
    the Processing log as the detection algorithm's do; they went to QGIS's stderr only."""
    folder = pair("dsifn", "3_4")
    feedback = error_recording_feedback()
    run(ALG, {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
              "DEVICE": "cpu", "REFERENCE": image(folder, "label")}, feedback)
    assert "The model was never trained: its output is meaningless" in feedback.warnings


def test_band_advice_offers_no_choice_the_algorithm_lacks(deepcl_provider, tiny_model, tmp_path):
    """Four unnamed bands are taken as red, green, blue from the first three, with a warning; it advised
    choosing the bands by hand, which this algorithm has no parameter for."""
    folder = pair("dsifn", "3_4")
    images = []
    for role in ("before", "after"):
        images.append(str(tmp_path / f"{role}.tif"))
        gdal.Translate(images[-1], image(folder, role), bandList=[1, 2, 3, 3], format="GTiff",
                       options=["-colorinterp", "undefined,undefined,undefined,undefined"])
    feedback = error_recording_feedback()
    run(ALG, {"BEFORE": images[0], "AFTER": images[1], "MODEL": str(tiny_model), "DEVICE": "cpu",
              "REFERENCE": image(folder, "label")}, feedback)
    said = [w for w in feedback.warnings if "bands do not say which is red" in w]
    assert len(said) == 2 and all(w.endswith("if they are in another order, name them in the files, e.g. gdal_edit.py "
                                             "-colorinterp_3 red -colorinterp_2 green -colorinterp_1 blue FILE for "
                                             "blue, green, red") for w in said), feedback.warnings


def test_model_left_out_is_the_bundled_one_as_in_detection(deepcl_provider, tmp_path):
    """The bundled model's figures on the pair, as `deepcl evaluate` (its default too) gives them."""
    from deepcl_core.evaluation import EvaluateOptions, evaluate

    folder = pair("dsifn", "3_4")
    result = run(ALG, {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "DEVICE": "cpu",
                       "REFERENCE": image(folder, "label"), "OUTPUT_HTML": str(tmp_path / "r.html")})
    expected = evaluate(EvaluateOptions(model=None, data_dirs=[folder.parent / folder.name], device="cpu"))
    assert result["TP"] == expected["per_pair"]["3_4"]["tp"] and result["FP"] == expected["per_pair"]["3_4"]["fp"]
    assert isinstance(result["TP"], int)
    # The confidence's reliability on the user's pair, as the engine's evaluation measures it.
    assert result["BRIER"] == pytest.approx(expected["per_pair"]["3_4"]["brier"], rel=1e-6)
    # Python floats: a numpy one reaches qgis_process as a PyQt_PyObject, and its BRIER came back empty
    assert type(result["BRIER"]) is float and type(result["ECE"]) is float
    assert result["ECE"] == pytest.approx(expected["per_pair"]["3_4"]["ece"], rel=1e-6)
    assert f"<td>Brier score</td><td>{result['BRIER']:.4f}</td>" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_refuses_two_references_or_none(deepcl_provider, tmp_path):
    folder = pair("dsifn", "3_4")
    message = check_message(ALG, {"CHANGE": image(folder, "label")})
    assert "either as a label raster or as changed-area polygons" in message


def test_a_model_or_threshold_beside_a_change_map_is_refused(deepcl_provider, tiny_model, tmp_path):
    """Both were dropped without a word: the figures were the given map's, not the model's, nor at
    that threshold (a file that was no model at all passed too)."""
    folder = pair("dsifn", "3_4")
    expected = ("A change map is given: the model file and the change threshold are used only to run a model on a "
                "before and an after image; leave them empty (the change map's classes are compared as they are).")
    for extra in ({"MODEL": str(tiny_model)}, {"THRESHOLD": 0.5}):
        message = check_message(ALG, {"CHANGE": image(folder, "label"), "REFERENCE": image(folder, "label"), **extra})
        assert message == expected, extra
    from qgis.core import QgsApplication, QgsProcessingContext

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert algorithm.checkParameterValues(  # the device: every dialog fills in its default
        {"CHANGE": image(folder, "label"), "REFERENCE": image(folder, "label"), "DEVICE": "cpu"},
        QgsProcessingContext()) == (True, "")


def test_a_cancelled_run_keeps_no_dataset_open(deepcl_provider, tmp_path):
    """Processing keeps the exception a failed algorithm raised (after the run it is still alive):
    the frames of its traceback must not keep the change map and the reference open. (QGIS's own
    layers of the parameters may keep the files open a while longer; those are not the plugin's.)"""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    folder = pair("levir", "test_77_0512_0256")
    change, label = tmp_path / "change.png", tmp_path / "label.png"
    change.write_bytes((folder / "label.png").read_bytes())  # any binary map will do
    label.write_bytes((folder / "label.png").read_bytes())
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run(ALG, {"CHANGE": str(change), "REFERENCE": str(label)}, feedback)
    gc.collect()
    alive = {dataset.GetDescription() for dataset in gc.get_objects() if type(dataset) is gdal.Dataset}
    assert not {str(change), str(label)} & alive


def test_a_run_cancelled_after_the_model_s_maps_closes_them_before_removing_them(deepcl_provider, tiny_model,
                                                                                  tmp_path, monkeypatch):
    """The maps a model made for the run were still open, held by the traceback's frames, when its
    folder was removed: Windows deletes no file GDAL holds open, and they stayed until QGIS exited."""
    import os
    import shutil

    from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProcessingUtils

    open_when_removed = {}
    remove = shutil.rmtree

    def noting_open_files(path, *args, **kwargs):
        descriptors = (Path("/proc/self/fd") / name for name in os.listdir("/proc/self/fd"))
        targets = {os.readlink(fd) for fd in descriptors if fd.is_symlink()}
        open_when_removed[str(path)] = sorted(t for t in targets if t.startswith(str(path)))
        return remove(path, *args, **kwargs)

    class CancelWhenComparing(QgsProcessingFeedback):
        def setProgressText(self, text: str) -> None:  # noqa: N802 (Qt's name)
            super().setProgressText(text)
            if text.startswith("Comparing"):
                self.cancel()

    monkeypatch.setattr(shutil, "rmtree", noting_open_files)
    folder = pair("dsifn", "3_4")
    temporary_before = set(Path(QgsProcessingUtils.tempFolder()).rglob("*"))
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run(ALG, {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
                  "DEVICE": "cpu", "REFERENCE": image(folder, "label")}, CancelWhenComparing())
    [still_open] = [files for path, files in open_when_removed.items() if "deepcl_evaluation_" in path]
    assert still_open == []
    assert set(Path(QgsProcessingUtils.tempFolder()).rglob("*")) - temporary_before == set()


def test_a_reference_whose_nodata_is_0_still_counts_its_unchanged_pixels(deepcl_provider, tiny_model, tmp_path):
    """QGIS's Rasterize declares 0 nodata: read as the engine reads labels, 0 is no change."""
    folder = pair("levir", "test_77_0512_0256")
    change = _change_map(tmp_path, tiny_model, folder)
    gdal.Translate(str(tmp_path / "nodata0.tif"), image(folder, "label"), noData=0)
    expected = run(ALG, {"CHANGE": change, "REFERENCE": image(folder, "label")})
    result = run(ALG, {"CHANGE": change, "REFERENCE": str(tmp_path / "nodata0.tif")})
    counts = ("TP", "FP", "FN", "TN")
    assert [result[key] for key in counts] == [expected[key] for key in counts]
    assert expected["FP"] + expected["TN"] > 0  # the label's unchanged pixels are counted


def test_a_change_map_whose_nodata_is_0_still_counts_its_unchanged_pixels(deepcl_provider, tmp_path):
    """Another tool's 0/1 map may declare 0 nodata too (Rasterize's default): 0 is no change. The
    label itself as such a map agrees with the label on every pixel."""
    folder = pair("levir", "test_77_0512_0256")
    changed = read(image(folder, "label")) > 0
    other = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "other.tif"), 256, 256, 1, gdal.GDT_Byte)
    other.GetRasterBand(1).WriteArray(changed.astype("uint8"))
    other.GetRasterBand(1).SetNoDataValue(0)
    other = None
    result = run(ALG, {"CHANGE": str(tmp_path / "other.tif"), "REFERENCE": image(folder, "label")})
    assert (result["TP"], result["FP"], result["FN"], result["TN"]) == (changed.sum(), 0, 0, (~changed).sum())


def test_a_report_into_a_missing_folder_is_refused_before_any_work(deepcl_provider, tiny_model, tmp_path):
    """The report is written last: into a folder that does not exist it failed after the model run
    and the metrics, with a FileNotFoundError's traceback. Refused up front in the words detection
    uses for its outputs, by the toolbox's check and in a batch row (which QGIS runs unchecked)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    folder = pair("dsifn", "3_4")
    missing = tmp_path / "reports"
    params = {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
              "DEVICE": "cpu", "REFERENCE": image(folder, "label"), "OUTPUT_HTML": str(missing / "r.html")}
    refusal = f"Output folder {missing} does not exist; create it or choose another"
    assert check_message(ALG, params) == refusal
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = error_recording_feedback()
    _, ok = algorithm.run(params, context, feedback)
    assert not ok and refusal in feedback.reported
    assert feedback.progress() == 0 and not missing.exists()  # no model run, no metrics


def test_the_report_never_replaces_an_input_and_replaces_a_link_not_its_target(deepcl_provider, tiny_model,
                                                                               tmp_path, oscd_crop):
    """Outside the dialog nothing asks before a file is replaced (qgis_process, scripts, batch rows):
    the report was written over the reference, the model or the change map, and through a link."""
    import hashlib
    import shutil

    from qgis.core import QgsProcessingException

    change = _change_map(tmp_path, tiny_model, oscd_crop, threshold=0.3)
    label = shutil.copy(image(oscd_crop, "label"), tmp_path / "label.tif")
    model = shutil.copy(tiny_model, tmp_path / "model.pt")
    digests = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in (change, label, model)}
    cases = [({"CHANGE": change, "REFERENCE": str(label)}, label, "reference"),
             ({"CHANGE": change, "REFERENCE": str(label)}, change, "change map"),
             ({"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"), "MODEL": str(model),
               "REFERENCE": str(label), "DEVICE": "cpu"}, model, "model file")]
    for parameters, target, words in cases:
        with pytest.raises(QgsProcessingException, match=f"would replace the {words}"):
            run(ALG, {**parameters, "OUTPUT_HTML": str(target)})
    link = tmp_path / "report.html"
    other = tmp_path / "notes.txt"
    other.write_text("my notes")
    link.symlink_to(other)
    run(ALG, {"CHANGE": change, "REFERENCE": str(label), "OUTPUT_HTML": str(link)})
    assert not link.is_symlink() and "DeepCL evaluation" in link.read_text() and other.read_text() == "my notes"
    assert {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in digests} == digests
    assert not list(tmp_path.glob(".report-*"))


def _layer_with_crs(path: str, name: str, authid: str) -> object:
    """The raster as a layer of the project whose CRS is set in QGIS ("Set layer CRS"), not in its file."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(path, name)
    assert layer.isValid() and not layer.crs().isValid()
    layer.setCrs(QgsCoordinateReferenceSystem(authid))
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_a_crs_assigned_in_qgis_places_the_reference_polygons(deepcl_provider, tiny_model, tmp_path):
    """A change map whose file has no CRS, given one in QGIS: reference polygons in Lambert-93 were
    burnt untransformed, in metres onto a grid in degrees: TP 0, FN 0, recall n/a. So too for the
    before image's CRS where the model detects."""
    from qgis.core import QgsProject

    source = pair("oscd", "bercy")  # EPSG:4326
    label = str(crop(image(source, "label"), tmp_path / "label.tif", 0, 0, 200, 200))
    polygons = label_polygons(label, tmp_path / "changed_l93.gpkg", "EPSG:2154")
    changed = int((read(label) > 0).sum())
    assert changed > 50
    # The label itself as the change map: everything the polygons cover is found
    change, before, after = (
        _layer_with_crs(str(crop(path, tmp_path / f"{name}.tif", 0, 0, 200, 200, keep_crs=False)), name, "EPSG:4326")
        for path, name in ((label, "change"), (image(source, "before"), "before"), (image(source, "after"), "after")))
    try:
        result = run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": polygons})
        # Reprojected pixel edges may move a pixel centre or two across
        assert result["TP"] == pytest.approx(changed, abs=3) and result["FN"] + result["FP"] <= 3
        by_model = run(ALG, {"BEFORE": before, "AFTER": after, "MODEL": str(tiny_model), "DEVICE": "cpu",
                             "REFERENCE_POLYGONS": polygons})
        assert by_model["TP"] + by_model["FN"] == pytest.approx(changed, abs=3)
    finally:
        QgsProject.instance().removeMapLayers([change.id(), before.id(), after.id()])


def test_reference_polygons_off_the_change_map_are_refused_and_none_on_it_said(deepcl_provider, tmp_path):
    """Polygons of another area (or in a wrong CRS) gave recall n/a and precision 0 without a word;
    training refuses them. Polygons around the map but none on it (a region's layer over a tile
    without change), or a layer without polygons, are a reference without change there: said."""
    from qgis.core import QgsProcessingException

    source = pair("oscd", "bercy")
    change = str(crop(image(source, "label"), tmp_path / "change.tif", 0, 0, 180, 180))
    elsewhere = crop(image(source, "label"), tmp_path / "elsewhere.tif", 180, 200, 180, 195)
    with pytest.raises(QgsProcessingException, match=r"No reference polygon of .* lies on the change map.*"
                                                     r"check the layer's CRS"):
        run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": label_polygons(elsewhere, tmp_path / "elsewhere.gpkg")})
    # Two squares, west and east of the map: their extent spans it, yet neither lies on it
    squares_package(change, [(-20, 0, 10), (200, 0, 10)], tmp_path / "around.gpkg", "changed")
    squares_package(change, [], tmp_path / "around.gpkg", "empty")
    feedback = error_recording_feedback()
    result = run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": f"{tmp_path / 'around.gpkg'}|layername=changed"},
                 feedback)
    assert result["TP"] + result["FN"] == 0 and result["FP"] > 0
    assert any("covers a valid pixel of the change map" in warning for warning in feedback.warnings)
    feedback = error_recording_feedback()
    result = run(ALG, {"CHANGE": change, "REFERENCE_POLYGONS": f"{tmp_path / 'around.gpkg'}|layername=empty"},
                 feedback)
    assert result["TP"] + result["FN"] == 0 and result["FP"] + result["TN"] == 180 * 180
    assert any("holds no polygon" in warning for warning in feedback.warnings)


def test_a_model_run_says_the_threshold_that_made_the_figures(deepcl_provider, tiny_model, tmp_path):
    """`deepcl evaluate` reports its threshold; Processing's evaluation said none, in its outputs,
    log or report. A change map given has no known threshold: said, and the output left empty."""
    folder = pair("dsifn", "3_4")
    parameters = {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(tiny_model),
                  "DEVICE": "cpu", "REFERENCE": image(folder, "label"), "OUTPUT_HTML": str(tmp_path / "r.html")}
    feedback = error_recording_feedback()
    given = run(ALG, {**parameters, "THRESHOLD": 0.4}, feedback)
    assert given["THRESHOLD_USED"] == pytest.approx(0.4)
    assert any(info.startswith("Model run — ") and "threshold: 0.4 (given)" in info for info in feedback.infos)
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<br>Model: {tiny_model}<br>Threshold: 0.4 (given)" in report and "Input scale" not in report
    models = run(ALG, parameters)
    assert 0 < models["THRESHOLD_USED"] < 1 and type(models["THRESHOLD_USED"]) is float
    assert f"Threshold: {models['THRESHOLD_USED']:g} (the model&#x27;s" in (tmp_path / "r.html").read_text("utf-8")
    feedback = error_recording_feedback()
    unknown = run(ALG, {"CHANGE": image(folder, "label"), "REFERENCE": image(folder, "label"),
                        "OUTPUT_HTML": str(tmp_path / "r.html")}, feedback)
    assert unknown["THRESHOLD_USED"] is None
    assert any("THRESHOLD_USED is left empty" in info for info in feedback.infos)
    assert "Threshold" not in (tmp_path / "r.html").read_text(encoding="utf-8")


def _label_as(kind: str, label: Path, target: Path) -> Path:
    """The real 0/1 ``label`` written as another tool or a painter would: change in green on black, a
    palette whose index 0 (the change) is drawn white and 1 black, white on a transparent layer, or
    0/255 declaring its 255 nodata."""
    source = gdal.Open(str(label))
    changed = source.GetRasterBand(1).ReadAsArray() > 0
    bands = {"green": 3, "palette": 1, "transparent": 4, "nodata255": 1}[kind]
    written = gdal.GetDriverByName("GTiff").Create(str(target), source.RasterXSize, source.RasterYSize, bands)
    written.SetGeoTransform(source.GetGeoTransform())
    written.SetProjection(source.GetProjection())
    if kind == "green":
        for index, channel in enumerate((0, 255, 0), start=1):
            written.GetRasterBand(index).WriteArray(changed.astype("uint8") * channel)
    elif kind == "palette":
        table = gdal.ColorTable()
        table.SetColorEntry(0, (255, 255, 255, 255))
        table.SetColorEntry(1, (0, 0, 0, 255))
        written.GetRasterBand(1).WriteArray((~changed).astype("uint8"))
        written.GetRasterBand(1).SetRasterColorTable(table)
        written.GetRasterBand(1).SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    elif kind == "transparent":
        for index in range(1, 5):
            written.GetRasterBand(index).WriteArray(changed.astype("uint8") * 255)
        written.GetRasterBand(4).SetRasterColorInterpretation(gdal.GCI_AlphaBand)
    else:
        written.GetRasterBand(1).WriteArray(changed.astype("uint8") * 255)
        written.GetRasterBand(1).SetNoDataValue(255)
    written = None
    return target


def _shifted_change_map(label: Path, target: Path, right: int = 4, down: int = 2) -> Path:
    """A 0/1 change map with nodata 255, as detection writes one: the label moved a few pixels, so
    that it finds some changes, misses some and raises false alarms; the margin it left is nodata."""
    source = gdal.Open(str(label))
    changed = source.GetRasterBand(1).ReadAsArray() > 0
    shifted = np.full(changed.shape, 255, "uint8")
    shifted[down:, right:] = changed[:-down, :-right]
    written = gdal.GetDriverByName("GTiff").CreateCopy(str(target), source)
    written.GetRasterBand(1).WriteArray(shifted)
    written.GetRasterBand(1).SetNoDataValue(255)
    written = None
    return target


def _engine_counts(before: Path, label: Path, change: Path) -> dict:
    """The counts `deepcl evaluate` gives ``change`` against ``label``: the label read by the engine's
    reader on the before grid, scored where both have data (as its evaluation of a pair scores)."""
    from deepcl_core.raster_io import open_raster
    from deepcl_core.training.pairs import PairFiles, read_label

    actual, valid = read_label(PairFiles("crop", before, before, label, "test"), open_raster(before, "before"))
    predicted = read(change)
    counts = Confusion.of(predicted == 1, actual, valid & (predicted != 255)).metrics()
    return {key.upper(): int(counts[key]) for key in ("tp", "fp", "fn", "tn")}


@pytest.mark.parametrize("kind, warned", [
    ("green", []),
    ("palette", []),
    ("transparent", ["has no unchanged pixel", "flatten it onto black (gdal_translate -b 1 -b 2 -b 3 "]),
    ("nodata255", ["declares 255, a value of change, as nodata", "gdal_edit.py -unsetnodata"]),
])
def test_a_reference_is_read_as_the_engine_reads_a_label(deepcl_provider, tmp_path, monkeypatch, kind, warned):
    """A green-on-black label read as no change, a palette read by its indices (inverted), and the
    engine's warnings of a label painted on a transparent layer or declaring its change nodata left
    out: Processing's figures differed from `deepcl evaluate`'s on the same map and label, or came
    without the warning that explains them. Read in strips of rows, as a large reference is."""
    from deepcl_qgis import accuracy

    monkeypatch.setattr(accuracy, "ROWS_PER_BLOCK", 64)  # several strips of the 300-row crop
    source = pair("oscd", "bercy")
    before = crop(image(source, "before"), tmp_path / "before.tif", 0, 95, 360, 300)
    label = crop(image(source, "label"), tmp_path / "label.tif", 0, 95, 360, 300)
    change = _shifted_change_map(label, tmp_path / "change.tif")
    reference = _label_as(kind, label, tmp_path / f"{kind}.tif")
    expected = _engine_counts(before, reference, change)
    assert min(expected.values()) > 0 if not warned else expected["TP"] + expected["TN"] > 0
    if not warned:  # the same change drawn otherwise: the plain 0/1 label's counts, not only the reader's own
        assert expected == _engine_counts(before, label, change)
    feedback = error_recording_feedback()
    result = run(ALG, {"CHANGE": str(change), "REFERENCE": str(reference)}, feedback)
    assert {key: result[key] for key in expected} == expected
    for words in warned:
        assert any(words in warning for warning in feedback.warnings), (words, feedback.warnings)
    assert warned or not [w for w in feedback.warnings if "unchanged pixel" in w or "as nodata" in w]


def test_a_reference_that_is_not_binary_is_refused_as_the_engine_refuses_a_label(deepcl_provider, tmp_path):
    """A grey (anti-aliased) edge counted as change without a word; the engine refuses such a label."""
    from qgis.core import QgsProcessingException

    source = pair("oscd", "bercy")
    label = crop(image(source, "label"), tmp_path / "label.tif", 0, 95, 360, 300)
    change = _shifted_change_map(label, tmp_path / "change.tif")
    grey = gdal.Translate(str(tmp_path / "grey.tif"), str(label))
    values = grey.GetRasterBand(1).ReadAsArray() * 255
    values[0, :3] = 128
    grey.GetRasterBand(1).WriteArray(values)
    grey = None
    with pytest.raises(QgsProcessingException, match=r"^Reference \S+grey.tif is not binary \(values 0, 128, 255\); a "
                                                     r"reference must hold 0"):
        run(ALG, {"CHANGE": str(change), "REFERENCE": str(tmp_path / "grey.tif")})
