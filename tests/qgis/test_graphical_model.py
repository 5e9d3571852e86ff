"""The graphical model in models/ chains detection into evaluation, as a user would build it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugin_test_helpers import image, pair

MODEL_FILE = Path(__file__).resolve().parent / "models" / "detect_and_evaluate.model3"


def test_model_chains_detection_into_evaluation(deepcl_provider, tiny_model, tmp_path):
    import processing
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL_FILE))
    folder = pair("levir", "test_121_0768_0256")
    results = processing.run(model, {
        "before": image(folder, "before"), "after": image(folder, "after"), "reference": image(folder, "label"),
        "model": str(tiny_model), "threshold": 0.4,
        "detect:change": str(tmp_path / "change.tif"), "evaluate:report": str(tmp_path / "report.html")})
    assert Path(results["detect:change"]).is_file()
    report = Path(results["evaluate:report"]).read_text(encoding="utf-8")
    f1 = float(re.search(r"F1 score</td><td>([0-9.]+)", report).group(1))
    assert 0.0 <= f1 <= 1.0
    children = results.get("CHILD_RESULTS")
    if children:  # QGIS ≥ 3.14 returns the children's outputs too
        assert children["evaluate"]["F1"] == pytest.approx(f1, abs=1e-4)
        assert children["detect"]["CHANGED_PIXELS"] == children["evaluate"]["TP"] + children["evaluate"]["FP"]


def test_output_names_chosen_in_a_model_are_kept(deepcl_provider, tiny_model, tmp_path, qgis_new_project):
    """The model calls its change output "change": loaded under that name, not the plugin's "Change"."""
    import processing
    from qgis.core import QgsProcessingModelAlgorithm, QgsProject

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL_FILE))
    folder = pair("levir", "test_121_0768_0256")
    processing.runAndLoadResults(model, {
        "before": image(folder, "before"), "after": image(folder, "after"), "reference": image(folder, "label"),
        "model": str(tiny_model), "threshold": 0.4,
        "detect:change": str(tmp_path / "change.tif"), "evaluate:report": str(tmp_path / "report.html")})
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    assert "change" in names and "Change" not in names


def test_a_step_left_at_its_defaults_names_no_file_of_this_machine(deepcl_provider, tmp_path):
    """The modeler fills a new step with its parameters' defaults and saves them in the .model3: the
    bundled model's path in this user's profile failed on every other machine ("The model file
    C:/Users/alice/…/deepcl_default.pt does not exist")."""
    from qgis.core import QgsApplication

    from deepcl_qgis.paths import bundled_model_path

    plugin_folder = str(bundled_model_path().parents[2])
    for name in ("deepcl:detectchanges", "deepcl:evaluatemodel", "deepcl:trainmodel"):
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(name)
        defaults = {d.name(): d.defaultValue() for d in algorithm.parameterDefinitions()}
        assert not [key for key, value in defaults.items() if plugin_folder in str(value)], name


def test_a_model_that_clips_both_images_names_its_group_readably(deepcl_provider, tiny_model, oscd_crop, tmp_path,
                                                                 qgis_new_project):
    """Both clipped images reach detection as layers named OUTPUT, each in a random folder of
    Processing's: the group was named after those folders ("DeepCL changes: b14b0b56… → 9032cc94…"),
    new at every run, so runs of one pair were not numbered (2), (3) as elsewhere."""
    import processing
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessingParameterExtent,
                           QgsProcessingParameterRasterLayer, QgsProject, QgsRasterLayer)

    model = QgsProcessingModelAlgorithm("clip and detect", "tests")
    for name in ("before", "after"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    model.addModelParameter(QgsProcessingParameterExtent("extent", "extent"), QgsProcessingModelParameter("extent"))
    for name in ("before", "after"):
        clip = QgsProcessingModelChildAlgorithm("gdal:cliprasterbyextent")
        clip.setChildId(f"clip_{name}")
        clip.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter(name)])
        clip.addParameterSources("PROJWIN", [QgsProcessingModelChildParameterSource.fromModelParameter("extent")])
        model.addChildAlgorithm(clip)
    detect = QgsProcessingModelChildAlgorithm("deepcl:detectchanges")
    detect.setChildId("detect")
    for name in ("before", "after"):
        detect.addParameterSources(name.upper(), [QgsProcessingModelChildParameterSource.fromChildOutput(
            f"clip_{name}", "OUTPUT")])
    detect.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(str(tiny_model))])
    output = QgsProcessingModelOutput("change", "change")
    output.setChildOutputName("CHANGE")
    detect.setModelOutputs({"change": output})
    model.addChildAlgorithm(detect)
    model.updateDestinationParameters()

    extent = QgsRasterLayer(str(oscd_crop / "before.tif"), "before").extent()
    inset = extent.width() / 8
    window = (f"{extent.xMinimum() + inset},{extent.xMaximum() - inset},{extent.yMinimum() + inset},"
              f"{extent.yMaximum() - inset} [EPSG:4326]")
    groups = []
    for run in range(2):
        processing.runAndLoadResults(model, {"before": str(oscd_crop / "before.tif"),
                                             "after": str(oscd_crop / "after.tif"), "extent": window,
                                             "detect:change": str(tmp_path / f"change{run}.tif")})
        groups = sorted(group.name() for group in QgsProject.instance().layerTreeRoot().findGroups())
    assert groups == ["DeepCL changes: OUTPUT (before → after)", "DeepCL changes: OUTPUT (before → after) (2)"]


def test_outputs_of_an_earlier_sessions_processing_are_named_readably_too(qgis_app):
    """A project reopened with an earlier session's model outputs: their folders are random too."""
    from deepcl_qgis.layer_styling import pair_names

    earlier = ["/tmp/processing_Qx1aZb/9032cc9427ea48f8885a2529ffd45091/OUTPUT.tif",
               "/tmp/processing_Qx1aZb/b14b0b56a3b04c989fa1367314673d7a/OUTPUT.tif"]
    assert pair_names("OUTPUT", "OUTPUT", *earlier) == ("OUTPUT", "before", "after")
    products = ["/data/S2A_20150801.SAFE/MTD_MSIL2A.xml", "/data/S2A_20180328.SAFE/MTD_MSIL2A.xml"]
    assert pair_names("MTD_MSIL2A", "MTD_MSIL2A", *products) == ("", "S2A_20150801.SAFE", "S2A_20180328.SAFE")
