"""deepcl:trainmodel: a few steps of fine-tuning from a folder of pairs and from layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr

from deepcl_core.model_file import load_model
from plugin_test_helpers import (check_message, error_recording_feedback, image, label_polygons, pair, run,
                                 square_polygons, squares_package)

ALG = "deepcl:trainmodel"
TINY_RUN = {"EPOCHS": 1, "ITERATIONS": 2, "BATCH_SIZE": 2, "CROP": 64, "DEVICE": "cpu"}


def test_fine_tune_on_a_folder_of_pairs(deepcl_provider, tiny_model, tmp_path):
    from qgis.core import QgsProcessingUtils

    data = tmp_path / "levir"
    data.mkdir()
    for name in ("test_55_0256_0000", "test_7_0256_0512", "val_27_0000_0256"):
        (data / name).symlink_to(pair("levir", name))
    out = tmp_path / "tuned.pt"
    feedback = error_recording_feedback()
    result = run(ALG, {"DATA_FOLDER": str(data), "INIT_MODEL": str(tiny_model), "OUTPUT": str(out), **TINY_RUN},
                 feedback)
    log = feedback.infos
    assert result["OUTPUT"] == str(out)
    bundle = load_model(out)
    assert bundle.config.encoder == "simple_cnn" and bundle.bands == ("red", "green", "blue")
    assert result["BEST_EPOCH"] == 1
    assert 0.0 <= result["F1"] <= 1.0  # one of the three pairs is held out for validation
    assert [line for line in log if line.startswith("Decision threshold")] == [
        f"Decision threshold {bundle.threshold:.3g} on the "
        + ("network's own score." if bundle.platt_scaling.is_identity else "calibrated confidence.")]
    # Processing cannot resume a run: no 50 MB checkpoint is left beside the model, nor in QGIS's temporary
    # folder, where each run left one until QGIS exited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["levir", "tuned.pt"]
    assert not list(Path(QgsProcessingUtils.tempFolder()).rglob("*.ckpt"))
    # Run again into the same file, as batch rows with alike names do: said, as detection says it
    assert not [w for w in feedback.warnings if "replaced" in w]
    again = error_recording_feedback()
    run(ALG, {"DATA_FOLDER": str(data), "INIT_MODEL": str(tiny_model), "OUTPUT": str(out), **TINY_RUN}, again)
    assert f"{out} existed and was replaced by this run's output." in again.warnings


def test_the_log_says_what_each_threshold_applies_to(deepcl_provider):
    from deepcl_core.confidence_calibration import PlattScaling
    from deepcl_core.training import TrainResult
    from deepcl_qgis.algorithms.train_model import TrainModelAlgorithm

    result = TrainResult(out=None, checkpoint=None, epochs_completed=1, best_epoch=1, best_metrics={}, history=[],
                         train_pairs=[], val_pairs=[], seconds=1.0, threshold=0.284,
                         thresholds_by_pixel_size=((5.0, 0.01), (20.0, 0.2)), platt_scaling=PlattScaling(0.6, -0.1),
                         platt_scalings_by_pixel_size=((20.0, PlattScaling(1.5, 4.5)),))
    # The 5 m class has a threshold but no scaling (a model of format 1 recalibrated on aerial pairs).
    assert TrainModelAlgorithm.threshold_text(result) == (
        "Decision threshold 0.284 on the calibrated confidence; 0.01 on the network's own score for pixels of 5 m "
        "or coarser; 0.2 on the calibrated confidence for pixels of 20 m or coarser.")


def test_cancel_says_what_is_left_in_processing_words(deepcl_provider, tiny_model, tmp_path):
    """Not the command line's --resume, which Processing has not: nothing is left."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda progress: feedback.cancel() if progress > 0 else None)
    with pytest.raises(QgsProcessingException, match="Training cancelled; no model file was written"):
        run(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")), "INIT_MODEL": str(tiny_model),
                  "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN, "ITERATIONS": 20}, feedback)
    assert list(tmp_path.iterdir()) == []


def test_engine_messages_name_the_parameters_not_the_command_lines_options(deepcl_provider, tiny_model, tmp_path):
    """The engine's advice names the command line's --crop; in Processing it names the parameter, in
    a sentence as the plugin's own messages are (the engine's begin in lower case, as a command line's do)."""
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as raised:
        run(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")), "INIT_MODEL": str(tiny_model),
                  "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN, "CROP": 512})
    assert str(raised.value).startswith("The crop (512 px) is larger than every training pair")
    assert str(raised.value).endswith("choose “Crop size (pixels)” 256 or less") and "--" not in str(raised.value)


def test_advice_naming_options_processing_has_not_says_they_are_the_command_lines(deepcl_provider, tmp_path):
    """A model trained with other HSCL margins, fine-tuned here: the warning told a Processing user to
    give --margin-unchanged and --margin-changed, options this algorithm has not, as if it had them."""
    from deepcl_core.training import TrainOptions, train

    first = train(TrainOptions(data_dirs=[pair("levir", "test_55_0256_0000")], val_fraction=0.0,
                               out=tmp_path / "m.pt", epochs=1, iterations_per_epoch=1, batch_size=2, crop=64,
                               encoder="simple_cnn", device="cpu", margin_unchanged=0.2, margin_changed=1.0))
    feedback = error_recording_feedback()
    run(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")), "INIT_MODEL": str(first.out),
              "OUTPUT": str(tmp_path / "tuned.pt"), **TINY_RUN}, feedback)
    assert [w for w in feedback.warnings if "was trained with" in w] == [
        f"The initial model {first.out} (“Initial model (fine-tune)”) was trained with --margin-unchanged 0.2 (now "
        "0.3), --margin-changed 1 (now 1.2): give those options to fine-tune it with its own loss (--margin-unchanged, "
        "--margin-changed are options of the `deepcl` command line, not of this algorithm)."]


def test_fine_tuning_without_validation_pairs_advises_what_processing_has(deepcl_provider, tiny_model, tmp_path):
    """The warning named the command line's `deepcl calibrate`, which a QGIS user does not have."""
    feedback = error_recording_feedback()
    run(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")), "INIT_MODEL": str(tiny_model),
              "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN}, feedback)
    said = [warning for warning in feedback.warnings if warning.startswith("No validation pairs: the fine-tuned")]
    assert len(said) == 1 and said[0].endswith("; give validation pairs (“Folder of validation pairs”) for "
                                               "training to choose them anew"), feedback.warnings


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_has_not_is_refused_before_the_run(deepcl_provider, tmp_path):
    """A batch or a graphical model found it only when its step started."""
    message = check_message(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")),
                                  "OUTPUT": str(tmp_path / "model.pt"), **TINY_RUN, "DEVICE": "cuda"})
    assert message.startswith("device 'cuda' asked for, but CUDA is not available"), message


def test_the_model_file_must_end_in_pt(deepcl_provider, tiny_model, tmp_path):
    """Detection and evaluation open .pt files only; qgis_process adds no extension."""
    message = check_message(ALG, {"DATA_FOLDER": str(pair("levir", "test_55_0256_0000")),
                                  "OUTPUT": str(tmp_path / "model.bin"), **TINY_RUN})
    assert "must end in .pt (got model.bin)" in message


def test_train_from_layers_and_changed_area_polygons(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    out = tmp_path / "from_layers.pt"
    result = run(ALG, {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                       "CHANGED_AREAS": str(polygons), "INIT_MODEL": str(tiny_model), "OUTPUT": str(out), **TINY_RUN})
    assert load_model(out).provenance  # a model with its training record
    assert result["F1"] is None  # a single pair: no validation


def test_an_area_of_interest_holding_no_changed_polygon_is_named(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """It was told "No changed-area polygon covers the before image", which they did."""
    from qgis.core import QgsProcessingException

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    label = gdal.Open(image(oscd_crop, "label"))
    values, (x0, dx, _, y0, _, dy) = label.ReadAsArray(), label.GetGeoTransform()
    row, column = next((r, c) for r in range(0, values.shape[0] - 8, 8) for c in range(0, values.shape[1] - 8, 8)
                       if not values[r:r + 8, c:c + 8].any())  # a block without change
    left, top, right, bottom = x0 + column * dx, y0 + row * dy, x0 + (column + 8) * dx, y0 + (row + 8) * dy
    area = tmp_path / "area.gpkg"
    vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(area))
    layer = vector.CreateLayer("area", srs=label.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(
        f"POLYGON (({left} {top}, {right} {top}, {right} {bottom}, {left} {bottom}, {left} {top}))"))
    layer.CreateFeature(feature)
    vector = layer = feature = None
    with pytest.raises(QgsProcessingException, match="No changed-area polygon lies inside the area of interest"):
        run(ALG, {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                  "CHANGED_AREAS": str(polygons), "AREA_OF_INTEREST": str(area), "INIT_MODEL": str(tiny_model),
                  "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN})
    assert not (tmp_path / "m.pt").exists()


def test_parameters_a_folder_of_pairs_cannot_use_or_cannot_find_are_refused(deepcl_provider, tiny_model, tmp_path):
    """An area of interest beside a folder of pairs was dropped without a word, and recorded as used; a
    validation folder that does not exist was refused as "Data folder not found", after the polygons
    were burnt; the model written over the initial model replaced the parent its record names."""
    folder = pair("dsifn", "3_4")
    area = squares_package(image(pair("oscd", "bercy"), "before"), [(0, 0, 10)], tmp_path / "area.gpkg", "area")
    assert check_message(ALG, {"DATA_FOLDER": str(folder), "AREA_OF_INTEREST": str(area),
                               "OUTPUT": str(tmp_path / "m.pt")}) == (
        "The area of interest applies only to training from layers; leave it empty with a folder of pairs.")
    assert check_message(ALG, {"DATA_FOLDER": str(folder), "VALIDATION_FOLDER": str(tmp_path / "nope"),
                               "OUTPUT": str(tmp_path / "m.pt")}) == (
        f"The folder of validation pairs {tmp_path / 'nope'} does not exist.")
    assert check_message(ALG, {"DATA_FOLDER": str(folder), "INIT_MODEL": str(tiny_model),
                               "OUTPUT": str(tiny_model)}) == (
        f"The trained model would replace the initial model {tiny_model} (“Initial model (fine-tune)”), which its "
        "record names as its parent; choose another “Trained model”")


def test_refuses_both_a_folder_and_layers(deepcl_provider, tmp_path):
    folder = pair("dsifn", "3_4")
    message = check_message(ALG, {"DATA_FOLDER": str(folder), "BEFORE": image(folder, "before"),
                                  "OUTPUT": str(tmp_path / "m.pt")})
    assert message.endswith("changed-area polygons (not both).")
    # Neither: not "(not both)", which read as the fault
    assert check_message(ALG, {"OUTPUT": str(tmp_path / "m.pt")}).endswith("and changed-area polygons.")


def test_a_skipped_pair_is_reported_in_the_processing_log(deepcl_provider, tiny_model, tmp_path):
    """The engine's warning reaches the log a QGIS user reads, not only QGIS's stderr."""
    import shutil

    data = tmp_path / "pairs"
    shutil.copytree(pair("levir", "test_55_0256_0000"), data / "test_55")
    shutil.copytree(pair("levir", "test_7_0256_0512"), data / "test_7")
    (data / "test_7" / "label.png").unlink()
    feedback = error_recording_feedback()
    run(ALG, {"DATA_FOLDER": str(data), "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN},
        feedback)
    assert "Skipped folder pairs/test_7: it has before and after but no label.*" in feedback.warnings


def _with_a_bowtie(polygons: Path) -> int:
    """Add a self-intersecting polygon (a hand-digitised slip) inside the layer's extent; its id."""
    vector = ogr.Open(str(polygons), 1)
    layer = vector.GetLayer(0)
    left, right, bottom, top = layer.GetExtent()
    width, height = right - left, top - bottom
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(
        f"POLYGON (({left} {bottom}, {left + width / 4} {bottom + height / 4}, {left + width / 4} {bottom}, "
        f"{left} {bottom + height / 4}, {left} {bottom}))"))
    feature.SetField("value", 1)
    layer.CreateFeature(feature)
    return feature.GetFID()


@pytest.mark.parametrize("setting", ["abort", "skip", "no_check"])
def test_an_invalid_changed_area_polygon_follows_processings_setting_in_words(deepcl_provider, tiny_model, tmp_path,
                                                                              oscd_crop, setting):
    """QGIS's own check raised through the feature iterator inside a generator: the run failed and
    then every line of Python in QGIS failed ("SystemError: unknown opcode") until QGIS restarted."""
    import processing
    from qgis.core import QgsFeatureRequest, QgsProcessingContext, QgsProcessingException, QgsProject

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    bowtie = _with_a_bowtie(polygons)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.setInvalidGeometryCheck({"abort": QgsFeatureRequest.GeometryAbortOnInvalid,
                                     "skip": QgsFeatureRequest.GeometrySkipInvalid,
                                     "no_check": QgsFeatureRequest.GeometryNoCheck}[setting])
    feedback = error_recording_feedback()
    out = tmp_path / "model.pt"
    parameters = {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                  "CHANGED_AREAS": str(polygons), "INIT_MODEL": str(tiny_model), "OUTPUT": str(out), **TINY_RUN}
    if setting == "abort":
        with pytest.raises(QgsProcessingException) as refused:
            processing.run(ALG, parameters, context=context, feedback=feedback)
        assert (f"Feature {bowtie} of “changed” has an invalid geometry (Self-intersection" in str(refused.value)
                and "Fix geometries" in str(refused.value)), str(refused.value)
        assert not out.exists()
    else:
        processing.run(ALG, parameters, context=context, feedback=feedback)
        assert load_model(out).provenance
        skipped = [w for w in feedback.warnings if "invalid geometry skipped" in w]
        assert len(skipped) == (setting == "skip")
    assert [n for n in range(3)] == [0, 1, 2]  # Python still works (a comprehension runs a new frame)


def _temporary_files() -> set:
    from qgis.core import QgsProcessingUtils

    return {path for path in Path(QgsProcessingUtils.tempFolder()).rglob("*")}


def test_training_from_layers_leaves_nothing_in_qgiss_temporary_folder(deepcl_provider, tiny_model, tmp_path,
                                                                       oscd_crop):
    """The pair made from the layers (two VRTs and a label) and the checkpoint's folder stayed until
    QGIS exited, after each run, failed or not."""
    from qgis.core import QgsProcessingException

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    parameters = {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                  "CHANGED_AREAS": str(polygons), "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"),
                  **TINY_RUN}
    before = _temporary_files()
    run(ALG, parameters)
    assert _temporary_files() - before == set()
    with pytest.raises(QgsProcessingException, match="larger than every training pair"):
        run(ALG, {**parameters, "CROP": 512})  # refused once the pair is written
    assert _temporary_files() - before == set()


def test_a_model_trained_from_layers_records_them(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """Its record named only the temporary files made from the layers, which QGIS deletes when it
    exits, and the command line "QGIS Processing deepcl:trainmodel"; messages called the pair "pair"."""
    from qgis.core import QgsProcessingException, QgsProject, QgsRasterLayer

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    before = QgsRasterLayer(image(oscd_crop, "before"), "abudhabi_2015", "gdal")
    QgsProject.instance().addMapLayer(before)
    try:
        parameters = {"BEFORE": before.id(), "AFTER": image(oscd_crop, "after"), "CHANGED_AREAS": str(polygons),
                      "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN}
        run(ALG, parameters)
        command = load_model(tmp_path / "m.pt").provenance["command_line"]
        assert command.startswith("processing.run(\"deepcl:trainmodel\"") or command.startswith(
            "processing.run('deepcl:trainmodel'"), command
        for given in (image(oscd_crop, "before"), image(oscd_crop, "after"), str(polygons), str(tiny_model)):
            assert given in command, command
        # The label burnt from the polygons is gone with the run: its fingerprint stays, the same for
        # the same polygons burnt again, another for polygons edited since
        from deepcl_core.training.provenance import file_sha256
        from deepcl_qgis.training_pair import write_pair_folder

        [learnt] = load_model(tmp_path / "m.pt").provenance["train_pairs"]
        changed = ogr.Open(str(polygons))
        wkb = [bytes(feature.GetGeometryRef().ExportToWkb()) for feature in changed.GetLayer(0)]
        changed = None
        again = write_pair_folder(image(oscd_crop, "before"), image(oscd_crop, "after"), wkb, None, tmp_path / "again")
        edited = write_pair_folder(image(oscd_crop, "before"), image(oscd_crop, "after"), wkb[1:], None,
                                   tmp_path / "edited")
        assert learnt["label_sha256"] == file_sha256(again / "label.tif") != file_sha256(edited / "label.tif")
        with pytest.raises(QgsProcessingException, match="the largest, abudhabi_2015, is"):
            run(ALG, {**parameters, "CROP": 512})
    finally:
        QgsProject.instance().removeMapLayer(before.id())


def test_a_changed_area_layer_without_polygons_is_named_as_such(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """It was told "No changed-area polygon covers the before image … (or check the layer's CRS)"."""
    from qgis.core import QgsProcessingException

    label = gdal.Open(image(oscd_crop, "label"))
    empty = tmp_path / "empty.gpkg"
    vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(empty))
    vector.CreateLayer("changed", srs=label.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    vector = None
    with pytest.raises(QgsProcessingException, match="The changed-area layer holds no polygon"):
        run(ALG, {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                  "CHANGED_AREAS": str(empty), "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"),
                  **TINY_RUN})


def test_running_out_of_memory_says_nothing_is_kept_in_processing_words(deepcl_provider, tiny_model, tmp_path,
                                                                         monkeypatch):
    """It advised continuing "with --resume" from the checkpoint of the last epoch, which Processing
    has not and had just deleted."""
    import torch
    from qgis.core import QgsProcessingException

    from deepcl_core.model.network import DeepCLNet

    forward, steps = DeepCLNet.forward, []

    def second_epoch_fails(network, before, after):  # as a full GPU fails (torch's message)
        if network.training:
            steps.append(1)
            if len(steps) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")
        return forward(network, before, after)
    monkeypatch.setattr(DeepCLNet, "forward", second_epoch_fails)
    data = pair("levir", "test_55_0256_0000").parent
    with pytest.raises(QgsProcessingException) as caught:
        run(ALG, {"DATA_FOLDER": str(data), "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"),
                  **{**TINY_RUN, "EPOCHS": 2}})
    message = str(caught.value)
    assert "ran out of memory while training (epoch 2)" in message and "nothing of the run is kept" in message
    assert "--" not in message and "“Batch size (crops)”" in message, message


def test_a_pair_placed_by_ground_control_points_gets_its_label_on_the_images_grid(qgis_app, tmp_path, oscd_crop):
    """An image placed by GCPs only (a scanned map, a raw scene) is read warped north-up, as QGIS draws
    it; the label was burnt on the file's raw grid, of another size, and no polygon covered it."""
    from deepcl_qgis.training_pair import write_pair_folder

    sources = {}
    for role in ("before", "after"):  # the crop's pixels, placed by their corners' coordinates only
        source = gdal.Open(image(oscd_crop, role))
        x0, dx, _, y0, _, dy = source.GetGeoTransform()
        width, height = source.RasterXSize, source.RasterYSize
        gcps = [gdal.GCP(x0 + col * dx, y0 + row * dy, 0, col, row)
                for col, row in ((0, 0), (width, 0), (0, height), (width, height))]
        sources[role] = str(tmp_path / f"{role}.tif")
        placed = gdal.Translate(sources[role], source, GCPs=gcps, outputSRS=source.GetProjection())
        assert placed.GetGCPCount() == 4 and placed.GetGeoTransform(can_return_null=True) is None
        placed = None
    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    vector = ogr.Open(str(polygons))  # held: its layer dies with it
    changed = [bytes(feature.GetGeometryRef().ExportToWkb()) for feature in vector.GetLayer(0)]
    vector = None
    folder = write_pair_folder(sources["before"], sources["after"], changed, None, tmp_path / "pair")
    label, before = gdal.Open(str(folder / "label.tif")), gdal.Open(str(folder / "before.vrt"))
    assert (label.RasterXSize, label.RasterYSize) == (before.RasterXSize, before.RasterYSize)
    assert label.GetGeoTransform() == pytest.approx(before.GetGeoTransform())
    assert (label.ReadAsArray() == 1).any()


def test_an_inputs_own_invalid_features_setting_wins_over_processings(deepcl_provider, tiny_model, tmp_path,
                                                                      oscd_crop):
    """The dialog lets a user set *Invalid features filtering* for one input (its advanced options):
    with Processing's setting "stop", an input set to "skip" was refused."""
    import processing
    from qgis.core import QgsFeatureRequest, QgsProcessingContext, QgsProcessingFeatureSourceDefinition, QgsProject

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    _with_a_bowtie(polygons)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryAbortOnInvalid)
    feedback = error_recording_feedback()
    skip_here = QgsProcessingFeatureSourceDefinition(
        str(polygons), False, -1, QgsProcessingFeatureSourceDefinition.FlagOverrideDefaultGeometryCheck,
        QgsFeatureRequest.GeometrySkipInvalid)
    processing.run(ALG, {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                         "CHANGED_AREAS": skip_here, "INIT_MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "m.pt"),
                         **TINY_RUN}, context=context, feedback=feedback)
    assert [w for w in feedback.warnings if "invalid geometry skipped" in w] and (tmp_path / "m.pt").exists()


def _layer_of(path: Path, crs, *wkts: str) -> Path:
    """A GeoPackage at ``path`` of one geometry per WKT (curves kept as GeoPackage keeps them)."""
    vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = vector.CreateLayer("drawn", srs=crs, geom_type=ogr.wkbUnknown)
    for wkt in wkts:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    return path


def test_curved_changed_areas_are_burnt_as_drawn(deepcl_provider, tmp_path, oscd_crop):
    """A circle drawn with QGIS's curve tools (a CurvePolygon in a GeoPackage), and a MultiSurface:
    GDAL burns no arcs, so they were learnt as no change, and a layer of curves only was refused as
    lying off the image. Burnt as their straight-segment forms are."""
    from qgis.core import QgsVectorLayer

    from deepcl_qgis.training_pair import write_pair_folder

    before = gdal.Open(image(oscd_crop, "before"))
    x0, dx, _, y0, _, dy = before.GetGeoTransform()
    x, y, r = x0 + 60 * dx, y0 + 60 * dy, 25 * dx
    curves = (f"CURVEPOLYGON (CIRCULARSTRING ({x - r} {y}, {x + r} {y}, {x - r} {y}))",
              f"MULTISURFACE (CURVEPOLYGON (COMPOUNDCURVE (CIRCULARSTRING ({x + 2 * r} {y}, {x + 3 * r} {y - r}, "
              f"{x + 4 * r} {y}), ({x + 4 * r} {y}, {x + 2 * r} {y}))))")
    linear = tuple(ogr.CreateGeometryFromWkt(wkt).GetLinearGeometry().ExportToWkt() for wkt in curves)
    labels = []
    for name, wkts in (("curved", curves), ("linear", linear)):
        layer = QgsVectorLayer(str(_layer_of(tmp_path / f"{name}.gpkg", before.GetSpatialRef(), *wkts)), name, "ogr")
        polygons = [bytes(feature.geometry().asWkb()) for feature in layer.getFeatures()]
        folder = write_pair_folder(image(oscd_crop, "before"), image(oscd_crop, "after"), polygons, None,
                                   tmp_path / name)
        labels.append(gdal.Open(str(folder / "label.tif")).ReadAsArray())
    assert labels[1].sum() > 1500 and (labels[0] == labels[1]).all()


def test_an_empty_area_of_interest_is_named_as_such(deepcl_provider, tiny_model, tmp_path, oscd_crop):
    """It was told that no changed-area polygon lay inside the area of interest."""
    from qgis.core import QgsProcessingException

    polygons = label_polygons(image(oscd_crop, "label"), tmp_path / "changed.gpkg")
    area = _layer_of(tmp_path / "area.gpkg", gdal.Open(image(oscd_crop, "label")).GetSpatialRef())
    with pytest.raises(QgsProcessingException, match="^The area-of-interest layer holds no polygon"):
        run(ALG, {"BEFORE": image(oscd_crop, "before"), "AFTER": image(oscd_crop, "after"),
                  "CHANGED_AREAS": str(polygons), "AREA_OF_INTEREST": str(area), "INIT_MODEL": str(tiny_model),
                  "OUTPUT": str(tmp_path / "m.pt"), **TINY_RUN})
    assert not (tmp_path / "m.pt").exists()


def test_a_pair_made_with_an_area_of_interest_is_its_window(deepcl_provider, tmp_path):
    """A small area of interest on a whole scene: the pair was the whole scene, all nodata in the label
    but there, read whole into memory, and half of training's random crops held no labelled pixel."""
    from deepcl_qgis.training_pair import write_pair_folder

    scene = pair("oscd", "pisa")  # 718×776, the after image on the before grid
    changed = ogr.Open(label_polygons(image(scene, "label"), tmp_path / "changed.gpkg"))
    polygons = [bytes(feature.GetGeometryRef().ExportToWkb()) for feature in changed.GetLayer(0)]
    changed = None
    area = [bytes(ogr.CreateGeometryFromWkt(wkt).ExportToWkb())
            for wkt in square_polygons(image(scene, "before"), [(160, 480, 120)])]
    whole = write_pair_folder(image(scene, "before"), image(scene, "after"), polygons, area, tmp_path / "whole", 0)
    label = gdal.Open(str(whole / "label.tif"))
    assert (label.RasterXSize, label.RasterYSize) == (120, 120)
    truth = gdal.Open(image(scene, "label")).ReadAsArray()[480:600, 160:280] > 0
    np.testing.assert_array_equal(label.ReadAsArray(), truth.astype(np.uint8))  # every pixel labelled, as burnt
    for name in ("before", "after"):
        cut = gdal.Open(str(whole / f"{name}.vrt"))
        assert (cut.RasterXSize, cut.RasterYSize) == (120, 120)
        assert cut.GetGeoTransform() == label.GetGeoTransform()
        np.testing.assert_array_equal(cut.ReadAsArray(), gdal.Open(image(scene, name)).ReadAsArray(160, 480, 120, 120))
    # Widened about its centre to the crop, where the scene allows
    grown = gdal.Open(str(write_pair_folder(image(scene, "before"), image(scene, "after"), polygons, area,
                                            tmp_path / "grown", 256) / "label.tif"))
    assert (grown.RasterXSize, grown.RasterYSize) == (256, 256)
    x0, dx, _, y0, _, dy = gdal.Open(image(scene, "before")).GetGeoTransform()
    assert grown.GetGeoTransform()[0] == pytest.approx(x0 + 92 * dx) and \
        grown.GetGeoTransform()[3] == pytest.approx(y0 + 412 * dy)
    assert (grown.ReadAsArray() != 255).sum() == 120 * 120
