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
