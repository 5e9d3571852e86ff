"""deepcl:detectchanges through processing.run in a real QGIS, on real pairs."""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.model_file import load_model
from plugin_test_helpers import check_message, error_recording_feedback, image, pair, read, run, squares_package

ALG = "deepcl:detectchanges"
FAST = {"TILE_SIZE": 128, "OVERLAP": 16, "DEVICE": "cpu"}


def _params(folder: Path, model: Path, out: Path, **extra) -> dict:
    return {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"), "MODEL": str(model),
            "CHANGE": str(out / "change.tif"), "CONFIDENCE": str(out / "confidence.tif"), **FAST, **extra}


def test_levir_pair_outputs_agree_with_returned_values(deepcl_provider, tiny_model, tmp_path):
    folder = pair("levir", "test_55_0256_0000")
    (tmp_path / "a").mkdir()
    first = run(ALG, _params(folder, tiny_model, tmp_path / "a"))
    confidence = read(first["CONFIDENCE"])
    threshold = float(np.round(np.median(confidence), 4))
    (tmp_path / "b").mkdir()
    result = run(ALG, _params(folder, tiny_model, tmp_path / "b", THRESHOLD=threshold))
    change, confidence = read(result["CHANGE"]), read(result["CONFIDENCE"])
    assert change.shape == confidence.shape == (256, 256)
    assert set(np.unique(change)) <= {0, 1}
    np.testing.assert_array_equal(change, (confidence >= threshold).astype(np.uint8))
    assert result["CHANGED_PIXELS"] == int(change.sum()) > 0
    assert result["VALID_PIXELS"] == 256 * 256
    assert result["CHANGED_PERCENT"] == pytest.approx(100 * change.sum() / change.size)
    assert result["CHANGED_AREA_M2"] is None  # PNG without georeference
    assert result["DEVICE_USED"] == "cpu"
    assert result["THRESHOLD_USED"] == threshold and first["THRESHOLD_USED"] == load_model(tiny_model).threshold


def test_layers_inside_a_zip_file_are_read_where_they_lie(deepcl_provider, tiny_model, tmp_path):
    """QGIS opens an image inside a zip as /vsizip//…/before.png; the engine gets that name whole
    (QGIS splits it into path, prefix and suffix) and finds what the plain files give."""
    from qgis.core import QgsRasterLayer

    folder = pair("levir", "test_55_0256_0000")
    with zipfile.ZipFile(tmp_path / "pair.zip", "w") as archive:
        for date in ("before", "after"):
            archive.write(image(folder, date), f"{date}.png")
    zipped = {date: QgsRasterLayer(f"/vsizip/{tmp_path / 'pair.zip'}/{date}.png", date, "gdal")
              for date in ("before", "after")}
    assert all(layer.isValid() for layer in zipped.values())
    for name in ("zipped", "plain"):
        (tmp_path / name).mkdir()
    from_zip = run(ALG, {**_params(folder, tiny_model, tmp_path / "zipped"), "BEFORE": zipped["before"],
                         "AFTER": zipped["after"]})
    plain = run(ALG, _params(folder, tiny_model, tmp_path / "plain"))
    np.testing.assert_array_equal(read(from_zip["CONFIDENCE"]), read(plain["CONFIDENCE"]))


@pytest.mark.parametrize("overviews, levels", [(None, 1), (False, 0)], ids=["default", "off"])
def test_outputs_get_overviews_for_display_unless_asked_not_to(deepcl_provider, tiny_model, tmp_path, overviews,
                                                               levels):
    """QGIS draws results: Processing builds overviews unless the parameter is off (952×640: one level)."""
    extra = {} if overviews is None else {"OVERVIEWS": overviews}
    result = run(ALG, _params(pair("sztaki", "szada_1"), tiny_model, tmp_path, **extra))
    for name in ("CHANGE", "CONFIDENCE"):
        dataset = gdal.Open(result[name])
        assert dataset.GetRasterBand(1).GetOverviewCount() == levels


def test_polygons_of_a_pair_without_georeference_lie_on_its_change_layer(deepcl_provider, tiny_model, tmp_path):
    """QGIS draws an image without georeference with y from 0 down to -height; the polygons must
    land there too, not mirrored below the x axis."""
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    folder = pair("levir", "test_55_0256_0000")
    (tmp_path / "probe").mkdir()
    probe = read(run(ALG, _params(folder, tiny_model, tmp_path / "probe"))["CONFIDENCE"])
    threshold = float(np.round(np.percentile(probe, 90), 4))
    result = run(ALG, _params(folder, tiny_model, tmp_path, THRESHOLD=threshold,
                              POLYGONS=str(tmp_path / "polygons.gpkg")))
    change = QgsRasterLayer(result["CHANGE"], "change", "gdal")
    polygons = QgsVectorLayer(result["POLYGONS"], "polygons", "ogr")
    assert change.isValid() and polygons.isValid() and polygons.featureCount() > 0
    assert change.extent().contains(polygons.extent()), (change.extent().toString(), polygons.extent().toString())


def test_oscd_crop_georeferenced_with_distance_and_polygons(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    params = _params(oscd_crop, tiny_model, tmp_path, BANDS_BEFORE=[1, 2, 3], BANDS_AFTER=[1, 2, 3],
                     THRESHOLD=0.3, DISTANCE=str(tmp_path / "distance.tif"), POLYGONS=str(tmp_path / "polygons.gpkg"))
    result = run(ALG, params)
    change = gdal.Open(result["CHANGE"])
    before = gdal.Open(image(oscd_crop, "before"))
    assert (change.RasterXSize, change.RasterYSize) == (before.RasterXSize, before.RasterYSize)
    assert change.GetGeoTransform() == pytest.approx(before.GetGeoTransform())
    assert "4326" in change.GetProjection() or "WGS 84" in change.GetProjection()
    distance = read(result["DISTANCE"])
    assert 0 <= distance[distance >= 0].min() and distance.max() <= 2
    assert result["CHANGED_AREA_M2"] > 0  # a Sentinel-2 pixel is about 100 m²
    pixels = result["CHANGED_PIXELS"]
    assert 50 * pixels < result["CHANGED_AREA_M2"] < 200 * pixels
    polygons = gdal.OpenEx(result["POLYGONS"])  # kept: the layer dies with its dataset
    assert polygons.GetLayer(0).GetFeatureCount() == result["POLYGON_COUNT"] > 0


def test_output_compression_may_be_chosen(deepcl_provider, tiny_model, tmp_path):
    """ZSTD by default; DEFLATE for software that cannot read ZSTD, with the same values."""
    folder = pair("levir", "test_55_0256_0000")
    outputs = {}
    for compression in ("", "deflate"):
        (tmp_path / (compression or "default")).mkdir()
        extra = {"COMPRESSION": compression} if compression else {}
        outputs[compression] = run(ALG, _params(folder, tiny_model, tmp_path / (compression or "default"), **extra))
    for compression, expected in (("", "ZSTD"), ("deflate", "DEFLATE")):
        for name in ("CHANGE", "CONFIDENCE"):
            dataset = gdal.Open(outputs[compression][name])
            assert dataset.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == expected, (compression, name)
    for name in ("CHANGE", "CONFIDENCE"):
        np.testing.assert_array_equal(read(outputs["deflate"][name]), read(outputs[""][name]))


def test_enlargement_for_the_network_may_be_chosen(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """INPUT_SCALE 2: the network sees the 10 m crop twice as large (the tiny model has no enlargement
    of its own, 0 keeps it at 1×); the outputs keep the before grid and change."""
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines = []

        def pushInfo(self, info: str) -> None:  # noqa: N802
            self.lines.append(info)

    logs = {scale: Log() for scale in (0, 2)}
    for scale in logs:
        (tmp_path / str(scale)).mkdir()
    results = {scale: run(ALG, _params(oscd_crop, tiny_model, tmp_path / str(scale), INPUT_SCALE=scale), logs[scale])
               for scale in (0, 2)}
    assert any("enlarged 1×" in line for line in logs[0].lines)
    assert any("enlarged 2×" in line for line in logs[2].lines)
    assert (results[0]["INPUT_SCALE_USED"], results[2]["INPUT_SCALE_USED"]) == (1, 2)
    plain, enlarged = read(results[0]["CONFIDENCE"]), read(results[2]["CONFIDENCE"])
    assert plain.shape == enlarged.shape and (plain == -1).sum() == (enlarged == -1).sum()
    assert not np.allclose(plain, enlarged)


def test_processing_extent_crops_the_outputs(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    before = gdal.Open(image(oscd_crop, "before"))
    x0, dx, _, y0, _, dy = before.GetGeoTransform()
    extent = f"{x0 + 10 * dx},{x0 + 74 * dx},{y0 + 90 * dy},{y0 + 20 * dy} [EPSG:4326]"
    result = run(ALG, _params(oscd_crop, tiny_model, tmp_path, EXTENT=extent))
    change = gdal.Open(result["CHANGE"])
    assert (change.RasterXSize, change.RasterYSize) == (64, 70)
    assert change.GetGeoTransform()[0] == pytest.approx(x0 + 10 * dx)
    assert result["VALID_PIXELS"] == 64 * 70


def test_mask_layer_leaves_nodata_outside_the_polygons(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    before = gdal.Open(image(oscd_crop, "before"))
    x0, dx, _, y0, _, dy = before.GetGeoTransform()
    mask = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feature = QgsFeature()
    # A triangle over the left part of the crop: corners at (column, row) (0, 0), (0, 160), (80, 160).
    corners = [QgsPointXY(x0 + col * dx, y0 + row * dy) for col, row in ((0, 0), (0, 160), (80, 160), (0, 0))]
    feature.setGeometry(QgsGeometry.fromPolygonXY([corners]))
    mask.dataProvider().addFeatures([feature])
    result = run(ALG, _params(oscd_crop, tiny_model, tmp_path, MASK=mask, THRESHOLD=0.3))
    change = read(result["CHANGE"])
    assert change.shape == (160, 80)  # cropped to the mask's extent
    assert change[5, 75] == 255 and change[150, 5] != 255  # nodata outside the triangle only
    assert result["VALID_PIXELS"] == int((change != 255).sum())
    assert 0.45 * 160 * 80 < result["VALID_PIXELS"] < 0.55 * 160 * 80
    # A mask without polygons (a new layer not drawn on yet): an OverflowError from its infinite extent
    empty = QgsVectorLayer("Polygon?crs=EPSG:4326", "new districts", "memory")
    assert check_message(ALG, _params(oscd_crop, tiny_model, tmp_path / "empty", MASK=empty)) == (
        "The mask layer new districts holds no polygon; draw the area to detect inside, or choose another layer.")


def test_a_mask_layers_unsaved_edits_are_used(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """Two squares in a GeoPackage, one deleted in an edit not saved yet: the run read the file and
    detected in both (the outputs' extent, from the layer, already took the edit)."""
    from qgis.core import QgsVectorLayer

    squares_package(image(oscd_crop, "before"), [(10, 10, 50), (100, 100, 50)], tmp_path / "zones.gpkg", "zones")
    layer = QgsVectorLayer(f"{tmp_path / 'zones.gpkg'}|layername=zones", "zones", "ogr")
    assert layer.isValid() and layer.startEditing()
    assert layer.deleteFeature(min(layer.allFeatureIds()))  # the first square, not saved
    result = run(ALG, _params(oscd_crop, tiny_model, tmp_path, MASK=layer, THRESHOLD=0.3))
    change = read(result["CHANGE"])
    assert change.shape == (50, 50) and (change != 255).all() and result["VALID_PIXELS"] == 50 * 50
    assert layer.isModified() and layer.featureCount() == 1  # the edit is the user's, still unsaved
    layer.rollBack()


def test_batch_of_pairs(deepcl_provider, tiny_model, tmp_path):
    """What the batch dialog does: the same algorithm over several pairs, one result each."""
    pairs = [pair("levir", "test_7_0256_0512"), pair("dsifn", "0_2"), pair("dsifn", "1_1")]
    results = []
    for index, folder in enumerate(pairs):
        out = tmp_path / str(index)
        out.mkdir()
        results.append(run(ALG, _params(folder, tiny_model, out, THRESHOLD=0.4)))
    for result in results:
        change = read(result["CHANGE"])
        assert change.shape == (256, 256)
        assert result["CHANGED_PIXELS"] == int((change == 1).sum())
    assert len({r["CHANGE"] for r in results}) == 3


def test_loaded_layers_are_styled_and_grouped(deepcl_provider, tiny_model, tmp_path, qgis_new_project):
    import processing
    from qgis.core import QgsProject

    folder = pair("dsifn", "2_4")
    feedback = error_recording_feedback()
    processing.runAndLoadResults(ALG, {**_params(folder, tiny_model, tmp_path), "CHANGE": "TEMPORARY_OUTPUT",
                                       "CONFIDENCE": "TEMPORARY_OUTPUT"}, feedback=feedback)
    # The parameter check once queued layers of its own, never written: "not correctly generated"
    assert feedback.reported == []
    groups = [g for g in QgsProject.instance().layerTreeRoot().findGroups(True) if g.name().startswith("DeepCL")]
    assert len(groups) == 1
    layers = {node.layer().name(): node.layer() for node in groups[0].findLayers()}
    assert set(layers) == {"Change", "Confidence"}
    # The change map over the imagery; the opaque confidence ramp, which would hide it, unticked.
    ticked = {node.layer().name(): node.itemVisibilityChecked() for node in groups[0].findLayers()}
    assert ticked == {"Change": True, "Confidence": False}
    assert layers["Change"].renderer().type() == "paletted"
    assert layers["Confidence"].renderer().type() == "singlebandpseudocolor"
    classes = {c.value: c.color for c in layers["Change"].renderer().classes()}
    assert classes[0].alpha() == 0 and classes[1].alpha() == 255
    # The same pair again (another threshold, say): its own group, not mixed into the first
    processing.runAndLoadResults(ALG, {**_params(folder, tiny_model, tmp_path), "CHANGE": "TEMPORARY_OUTPUT",
                                       "CONFIDENCE": "TEMPORARY_OUTPUT"})
    groups = [g for g in QgsProject.instance().layerTreeRoot().findGroups(True) if g.name().startswith("DeepCL")]
    names = sorted(g.name() for g in groups)
    assert len(names) == 2 and names[1] == f"{names[0]} (2)"
    assert all(sorted(node.layer().name() for node in g.findLayers()) == ["Change", "Confidence"] for g in groups)


def test_cancel_leaves_no_output(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda progress: feedback.cancel() if progress > 0 else None)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run(ALG, _params(oscd_crop, tiny_model, tmp_path, TILE_SIZE=64, OVERLAP=0, BATCH_SIZE=1), feedback)
    assert not list(tmp_path.glob("*.tif")) and not list(tmp_path.glob(".*"))


def test_a_paletted_image_is_detected_as_its_colours(deepcl_provider, tiny_model, tmp_path):
    """A one-band image of colour-table indices (made with GDAL's rgb2pct.py) is accepted by a 3-band
    model and read as its colours: the outputs of its colours written as RGB (pct2rgb.py)."""
    folder = pair("levir", "test_55_0256_0000")
    paletted, colours = tmp_path / "paletted.tif", tmp_path / "colours.tif"
    for tool, source, target in (("rgb2pct.py", image(folder, "before"), paletted), ("pct2rgb.py", paletted, colours)):
        subprocess.run([tool, "-of", "GTiff", str(source), str(target)], check=True, capture_output=True)
    results = []
    for before in (paletted, colours):
        out = tmp_path / before.stem
        out.mkdir()
        results.append(run(ALG, {**_params(folder, tiny_model, out), "BEFORE": str(before)}))
    np.testing.assert_array_equal(read(results[0]["CONFIDENCE"]), read(results[1]["CONFIDENCE"]))
    assert results[0]["VALID_PIXELS"] == 256 * 256


def test_refuses_the_same_layer_twice(deepcl_provider, tiny_model, tmp_path):
    folder = pair("levir", "test_55_0256_0000")
    params = {**_params(folder, tiny_model, tmp_path), "AFTER": image(folder, "before")}
    assert "same layer" in check_message(ALG, params)


def test_refuses_a_missing_band(deepcl_provider, tiny_model, tmp_path):
    folder = pair("levir", "test_55_0256_0000")
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, BANDS_BEFORE=[1, 2, 5]))
    assert "Band 5 does not exist" in message and "3 band(s)" in message


def test_values_typed_as_on_the_command_line_are_refused_in_words(deepcl_provider, tiny_model, tmp_path):
    """qgis_process and scripts pass text: Processing reads '3,2,1' as band 0 and lets '0,5' through
    as a threshold of 0; ';' separates bands, a point decimals."""
    folder = pair("levir", "test_55_0256_0000")
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, BANDS_BEFORE="3,2,1"))
    assert message == "Bands of the before image: separate band numbers with ';' (e.g. 3;2;1); got '3,2,1'."
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, THRESHOLD="0,5"))
    assert message == "Change threshold '0,5' is not a number; write decimals with a point (e.g. 0.5)."
    result = run(ALG, _params(folder, tiny_model, tmp_path, BANDS_BEFORE="3;2;1", THRESHOLD="0.5"))
    assert result["CHANGE"]


def test_numbers_out_of_range_are_refused_in_words(deepcl_provider, tiny_model, tmp_path):
    """A threshold of 1.5 or a tile of 0 got Processing's "Incorrect parameter value for THRESHOLD"."""
    folder = pair("levir", "test_55_0256_0000")
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, THRESHOLD=1.5))
    assert message == "Change threshold must be between 0.001 and 0.99; got 1.5."
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, TILE_SIZE=0))
    assert message.startswith("Tile size") and message.endswith("; got 0.")
    # A range open at the top: it read "must be between 0 and 1.79769e+308"
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, MIN_AREA=-1))
    assert message == "Minimum polygon area (m²) must be at least 0; got -1."
    # Decimals where a whole number is asked for were rounded silently (1.5 ran enlarged 2×, as the command
    # line refuses it)
    for name, value in (("INPUT_SCALE", 1.5), ("BATCH_SIZE", "2.5")):
        message = check_message(ALG, _params(folder, tiny_model, tmp_path, **{name: value}))
        assert message.endswith(f" must be a whole number; got {float(value):g}."), message


def test_a_tile_too_small_for_the_overlap_is_refused_before_the_run(deepcl_provider, tiny_model, tmp_path):
    """Each is within its own range; together they are not (the engine's rule, asked in the check)."""
    folder = pair("levir", "test_55_0256_0000")
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, TILE_SIZE=32, OVERLAP=64))
    assert message.startswith("Overlap must be at least 0 and under half the tile size (16); got 64")
    assert not list(tmp_path.glob("*.tif"))


def test_refuses_a_model_for_another_number_of_bands(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    message = check_message(ALG, _params(oscd_crop, tiny_model, tmp_path, BANDS_BEFORE=[1, 2, 3, 4],
                                         BANDS_AFTER=[1, 2, 3, 4]))
    assert "takes 3 band(s)" in message and "4 before band(s)" in message


def test_refuses_images_that_do_not_overlap(deepcl_provider, tiny_model, tmp_path):
    params = {**_params(pair("oscd", "bercy"), tiny_model, tmp_path), "AFTER": image(pair("oscd", "beihai"), "after")}
    assert "do not overlap" in check_message(ALG, params)


def test_images_placed_without_a_crs_are_detected_as_qgis_draws_them(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """The OSCD crop (the after image on another grid, of another size) with both CRSs removed,
    the geotransforms kept: processing.run's check lets the engine align them by their
    geotransforms, and the maps are those of the pair with its CRS. It was refused as two images
    without georeference of different sizes."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for role in ("before", "after"):
        copy = gdal.Translate(str(plain / f"{role}.tif"), image(oscd_crop, role))
        copy.SetProjection("")
        copy = None
    bands = dict(BANDS_BEFORE=[1, 2, 3], BANDS_AFTER=[1, 2, 3], THRESHOLD=0.3)
    without = run(ALG, _params(plain, tiny_model, _folder(tmp_path / "no_crs"), **bands))
    with_crs = run(ALG, _params(oscd_crop, tiny_model, _folder(tmp_path / "crs"), **bands))
    for name in ("CHANGE", "CONFIDENCE"):
        np.testing.assert_array_equal(read(without[name]), read(with_crs[name]))
    assert without["CHANGED_PIXELS"] == with_crs["CHANGED_PIXELS"] > 0


def test_a_crs_assigned_in_qgis_but_not_in_the_files_is_pointed_out(deepcl_provider, tiny_model, tmp_path,
                                                                      oscd_crop):
    """The crop's files without their CRS, the layers given EPSG:4326 in QGIS (Layer Properties ▸
    Source): the run reads the files, so it works without a CRS, and the log says so and how to
    keep the CRS. It said nothing, and the summary spoke of images not georeferenced."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer

    plain = _folder(tmp_path / "plain")
    layers = []
    for role in ("before", "after"):
        copy = gdal.Translate(str(plain / f"{role}.tif"), image(oscd_crop, role))
        copy.SetProjection("")
        copy = None
        layer = QgsRasterLayer(str(plain / f"{role}.tif"), f"plain {role}", "gdal")
        layer.setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
        QgsProject.instance().addMapLayer(layer)
        layers.append(layer)
    feedback = error_recording_feedback()
    try:
        result = run(ALG, {**_params(plain, tiny_model, _folder(tmp_path / "out"), BANDS_BEFORE=[1, 2, 3],
                                     BANDS_AFTER=[1, 2, 3]), "BEFORE": layers[0].id(), "AFTER": layers[1].id()},
                     feedback)
    finally:
        QgsProject.instance().removeMapLayers([layer.id() for layer in layers])
    assert result["CHANGED_AREA_M2"] is None
    for name in ("plain before", "plain after"):
        assert any(f"The layer '{name}' has the CRS EPSG:4326 in QGIS, but its file holds none" in warning
                   for warning in feedback.warnings), feedback.warnings


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_missing_bundled_model_is_explained(deepcl_provider, tmp_path, monkeypatch):
    """A copy of the plugin without its model (e.g. a trimmed package) says so in user words."""
    import deepcl_qgis.algorithms.base as algorithm_base
    import deepcl_qgis.pair_checks as pair_checks

    missing = tmp_path / "models" / "deepcl_default.pt"
    for module in (algorithm_base, pair_checks):
        monkeypatch.setattr(module, "bundled_model_path", lambda: missing)
    folder = pair("levir", "test_55_0256_0000")
    params = _params(folder, Path("unused"), tmp_path)
    params["MODEL"] = ""  # empty: the bundled model
    message = check_message(ALG, params)
    assert "No trained model is bundled" in message and "Model file" in message


def test_a_model_that_is_a_folder_or_of_another_ending_is_named_so(deepcl_provider, tiny_model, tmp_path):
    """A folder was "does not exist"; a model named .pth (PyTorch's usual ending) or an image got
    Processing's "Incorrect parameter value for MODEL"."""
    import shutil

    folder = pair("levir", "test_55_0256_0000")
    renamed = tmp_path / "tiny.pth"
    shutil.copy(tiny_model, renamed)
    messages = {model: check_message(ALG, _params(folder, model, tmp_path)) for model in (tmp_path, renamed)}
    assert messages == {
        tmp_path: f"The model file {tmp_path} is a folder; choose the DeepCL model file (.pt) inside it.",
        renamed: f"The model file {renamed} does not end in .pt, as DeepCL model files do; choose a DeepCL model "
                 "file."}


def test_model_may_be_left_out_and_the_bundled_model_is_used(deepcl_provider, tmp_path):
    """Scripts and qgis_process leave MODEL out; the bundled model must then run, not a refusal."""
    from deepcl_qgis.paths import bundled_model_path

    if not bundled_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    sample = Path(__file__).resolve().parents[2] / "resources" / "sample"
    result = run(ALG, {
        "BEFORE": str(sample / "hongkong_before.tif"), "AFTER": str(sample / "hongkong_after.tif"),
        "CHANGE": str(tmp_path / "change.tif"), "CONFIDENCE": str(tmp_path / "confidence.tif")})
    change = read(result["CHANGE"])
    assert result["CHANGED_PIXELS"] == int((change == 1).sum()) > 0
    assert result["VALID_PIXELS"] == int((change != 255).sum())


def _deepcl_groups():
    from qgis.core import QgsProject

    return [g for g in QgsProject.instance().layerTreeRoot().findGroups(True) if g.name().startswith("DeepCL")]


def _changed_pixels_shown(layer) -> int:
    """Changed pixels as QGIS reads the layer (its open dataset), not as the file on disk holds them."""
    provider = layer.dataProvider()
    block = provider.block(1, provider.extent(), provider.xSize(), provider.ySize())
    return sum(block.value(row, column) == 1 for row in range(block.height()) for column in range(block.width()))


def test_running_again_into_the_same_files_shows_the_new_result(deepcl_provider, tiny_model, tmp_path,
                                                                  qgis_new_project):
    """A second try at another threshold, into the same files: QGIS keeps the layers it loaded for
    them; they show the new maps (QGIS read the replaced files before) and stay in their group (a
    new group nested in the old one held them). The group names the pair's folder, as the layers
    are only called before and after."""
    import processing

    folder = pair("dsifn", "2_4")
    confidence = None
    for threshold in (0.99, None):
        if confidence is not None:  # the second run: about half the pixels change
            threshold = float(np.round(np.median(confidence), 4))
        processing.runAndLoadResults(ALG, _params(folder, tiny_model, tmp_path, THRESHOLD=threshold))
        confidence = read(tmp_path / "confidence.tif")
    groups = _deepcl_groups()
    assert [g.name() for g in groups] == ["DeepCL changes: 2_4 (before → after)"]
    layers = {node.layer().name(): node.layer() for node in groups[0].findLayers()}
    assert set(layers) == {"Change", "Confidence"}
    on_disk = int((read(tmp_path / "change.tif") == 1).sum())
    assert on_disk > 1000 and _changed_pixels_shown(layers["Change"]) == on_disk


def test_optional_outputs_left_blank_in_the_batch_dialog_are_not_loaded(deepcl_provider, tiny_model, tmp_path,
                                                                         qgis_new_project):
    """The batch dialog gives a blank optional output as a destination without a file: it was taken
    as given, and Processing reported "The following layers were not correctly generated" each row."""
    import processing
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProject

    blank = {name: QgsProcessingOutputLayerDefinition("", QgsProject.instance()) for name in ("DISTANCE", "POLYGONS")}
    feedback = error_recording_feedback()
    results = processing.runAndLoadResults(ALG, {**_params(pair("dsifn", "2_4"), tiny_model, tmp_path), **blank},
                                           feedback=feedback)
    assert feedback.reported == [] and results["DISTANCE"] is None and results["POLYGONS"] is None
    assert sorted(node.layer().name() for node in _deepcl_groups()[0].findLayers()) == ["Change", "Confidence"]


def test_a_batch_row_is_checked_as_the_toolbox_checks_it(deepcl_provider, tiny_model, tmp_path):
    """Batch rows and a graphical model's steps run without Processing's parameter check: the
    same layer twice ran, and scored 0 % change."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    folder = pair("levir", "test_55_0256_0000")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = error_recording_feedback()
    _, ok = algorithm.run({**_params(folder, tiny_model, tmp_path), "AFTER": image(folder, "before")}, context,
                          feedback)
    assert not ok and any("is chosen as both the before and the after image" in e for e in feedback.reported)
    assert not list(tmp_path.iterdir())


def test_choices_are_given_by_name_or_by_number(deepcl_provider, tiny_model, tmp_path):
    """`qgis_process help` lists the options by number and a graphical model's Enum input passes
    the number: both were refused ("Device is one of auto, cpu, cuda, mps (by name); got 1.")."""
    from osgeo import gdal

    folder = pair("levir", "test_55_0256_0000")
    result = run(ALG, _params(folder, tiny_model, tmp_path, DEVICE=1, PRECISION="1", COMPRESSION=1))
    assert result["DEVICE_USED"] == "cpu"
    assert gdal.Open(result["CONFIDENCE"]).GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert check_message(ALG, _params(folder, tiny_model, tmp_path, DEVICE=7)) == \
        "Device is one of auto, cpu, cuda, mps (or their numbers, 0 to 3); got 7."
    assert check_message(ALG, _params(folder, tiny_model, tmp_path, DEVICE="gpu")) == \
        "Device is one of auto, cpu, cuda, mps (or their numbers, 0 to 3); got gpu."
    # What "Device used" says on a GPU, passed on by a graphical model: the device it names, which
    # this machine has not (it was refused as no choice at all)
    import torch

    for used in ("cuda (NVIDIA H200)", "cuda:0 (NVIDIA H200)"):
        if torch.cuda.is_available():  # the device it names is here: it runs there
            assert run(ALG, _params(folder, tiny_model, tmp_path, DEVICE=used))["DEVICE_USED"].startswith("cuda")
        else:
            assert check_message(ALG, _params(folder, tiny_model, tmp_path, DEVICE=used)).startswith(
                "device 'cuda' asked for, but CUDA is not available")
    assert check_message(ALG, _params(folder, tiny_model, tmp_path, DEVICE="cuda:1 (NVIDIA H200)")) == \
        "Device is one of auto, cpu, cuda, mps (or their numbers, 0 to 3); got cuda:1 (NVIDIA H200)."


def test_the_summary_line_counts_the_tiles_in_words(deepcl_provider, tiny_model, tmp_path):
    """An image that fits one tile: the log said "1 tiles on cpu"."""
    feedback = error_recording_feedback()
    run(ALG, _params(pair("levir", "test_55_0256_0000"), tiny_model, tmp_path, TILE_SIZE=256, OVERLAP=0), feedback)
    summary = next(line for line in feedback.infos if line.startswith("Changed: "))
    assert ", 1 tile on cpu (fp32) in " in summary, summary


def test_polygons_into_a_table_of_a_database_are_refused_in_words(deepcl_provider, tiny_model, tmp_path):
    folder = pair("levir", "test_55_0256_0000")
    table = f"ogr:dbname='{tmp_path / 'store.gpkg'}' table=\"changes\" (geom)"
    message = check_message(ALG, _params(folder, tiny_model, tmp_path, POLYGONS=table))
    assert message == ("The change polygons are written to a GeoPackage file of their own: give a .gpkg file "
                       "name, not a table of an existing database.")
    # Nor are they offered: the output widgets offer a database table only where the provider says it writes one
    outputs = [definition for definition in deepcl_provider.algorithm("detectchanges").parameterDefinitions()
               if definition.isDestination()]
    assert outputs and not any(definition.supportsNonFileBasedOutput() for definition in outputs)


def test_a_run_that_replaces_files_says_so(deepcl_provider, tiny_model, tmp_path):
    """Batch rows whose autofilled names are alike write over each other's files without a question."""
    params = _params(pair("levir", "test_55_0256_0000"), tiny_model, tmp_path)
    first, second = error_recording_feedback(), error_recording_feedback()
    run(ALG, params, first)
    run(ALG, params, second)
    replaced = [w for w in second.warnings if "was replaced" in w]
    assert not [w for w in first.warnings if "was replaced" in w]
    assert replaced == [f"{tmp_path / name} existed and was replaced by this run's output."
                        for name in ("change.tif", "confidence.tif")]


@pytest.mark.parametrize("destinations", ["temporary", "files"])
def test_a_runs_layers_stack_polygons_over_change_over_the_ramps(deepcl_provider, tiny_model, tmp_path,
                                                                  qgis_new_project, destinations):
    """Processing loads the outputs in an order that follows their file names: with temporary
    outputs the change map landed above the polygons and hid their outlines."""
    import processing
    from qgis.core import QgsProject

    names = {"CHANGE": "change.tif", "CONFIDENCE": "confidence.tif", "DISTANCE": "distance.tif",
             "POLYGONS": "polygons.gpkg"}
    outputs = {key: "TEMPORARY_OUTPUT" if destinations == "temporary" else str(tmp_path / name)
               for key, name in names.items()}
    processing.runAndLoadResults(ALG, {**_params(pair("dsifn", "2_4"), tiny_model, tmp_path), **outputs})
    group = next(g for g in QgsProject.instance().layerTreeRoot().findGroups(True) if g.name().startswith("DeepCL"))
    assert [node.layer().name() for node in group.findLayers()] == ["Change polygons", "Change", "Confidence",
                                                                    "Distance"]


def test_a_pair_run_into_files_another_pairs_run_loaded_takes_their_layers_into_its_group(
        deepcl_provider, tiny_model, tmp_path, qgis_new_project):
    """Batch rows whose autofilled names are alike: the second pair's maps replace the first's
    files, and QGIS hands the run the layers it loaded for them. They showed the second pair's maps
    in the first pair's group; they belong to the second pair's group, and no group is left that
    names the first pair over maps it no longer has."""
    import processing
    from qgis.core import QgsProject

    for folder in (pair("dsifn", "2_4"), pair("dsifn", "3_4")):
        processing.runAndLoadResults(ALG, _params(folder, tiny_model, tmp_path))
    groups = {group.name(): [node.layer().name() for node in group.findLayers()] for group in _deepcl_groups()}
    assert groups == {"DeepCL changes: 3_4 (before → after)": ["Change", "Confidence"]}
    assert len(QgsProject.instance().mapLayers()) == 2  # the layers were reused, not loaded twice
    assert _deepcl_groups()[0].parent() is QgsProject.instance().layerTreeRoot()  # not nested in the first's


def test_the_distance_ramp_spans_the_models_margins_so_change_shows_dark(deepcl_provider, tmp_path, qgis_new_project):
    """The ramp ran from 0 to 2, where the bundled model's distances stay under about 1.2 (its
    changed-pixel margin): changed ground came out mid blue on light blue. On a real aerial pair
    with the bundled model, changed pixels' typical distance now lies in the ramp's dark half."""
    import numpy as np
    import processing

    from deepcl_core.model_file import load_model
    from deepcl_qgis.paths import bundled_model_path

    folder = pair("levir", "test_7_0256_0512")
    outputs = {"DISTANCE": str(tmp_path / "distance.tif"), "CHANGE": str(tmp_path / "change.tif"),
               "CONFIDENCE": str(tmp_path / "confidence.tif")}
    processing.runAndLoadResults(ALG, {"BEFORE": image(folder, "before"), "AFTER": image(folder, "after"),
                                       "DEVICE": "cpu", **outputs})
    layer = next(node.layer() for node in _deepcl_groups()[0].findLayers() if node.layer().name() == "Distance")
    shader = layer.renderer().shader().rasterShaderFunction()
    margins = load_model(bundled_model_path()).provenance["loss"]
    assert (shader.minimumValue(), shader.maximumValue()) == (0, margins["margin_changed"])
    distance, label = read(outputs["DISTANCE"]), read(image(folder, "label")) > 0
    position = [float(np.median(distance[where])) / shader.maximumValue() for where in (label, ~label)]
    assert position[0] > 0.5 and position[0] > position[1], position  # changed in the dark half, above unchanged


def test_a_parameter_given_twice_or_a_yes_no_read_as_yes_is_refused(deepcl_provider, tiny_model, tmp_path):
    """qgis_process makes a list of a repeated KEY=, which QGIS then reads as empty or 0: a repeated
    MODEL= ran the bundled model without a word, a repeated THRESHOLD= was refused as "got 0.0". QGIS
    reads OVERVIEWS=no (any text but false and 0) as yes."""
    folder = pair("levir", "test_55_0256_0000")
    base = _params(folder, tiny_model, tmp_path)
    assert check_message(ALG, {**base, "MODEL": [str(tiny_model), str(tiny_model)]}) == (
        "“Model file” is given 2 times; give it once.")
    assert check_message(ALG, {**base, "THRESHOLD": [0.3, 0.6]}) == "“Change threshold” is given 2 times; give it once."
    assert check_message(ALG, {**base, "OVERVIEWS": "no"}) == (
        "“Build overviews (pyramids)” is true or false (or 1 or 0); got “no”.")
    from qgis.core import QgsApplication, QgsProcessingContext

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    for accepted in ({"OVERVIEWS": "false"}, {"OVERVIEWS": "TRUE"}, {"OVERVIEWS": 0},
                     {"BANDS_BEFORE": [1, 2, 3], "BANDS_AFTER": [1, 2, 3]}):  # several bands: a list, rightly
        assert algorithm.checkParameterValues({**base, **accepted}, QgsProcessingContext()) == (True, ""), accepted
