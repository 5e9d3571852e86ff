"""The bad-input matrix of issue 7 in a real QGIS (pytest-qgis): deepcl:detectchanges refuses each
case in checkParameterValues (what the dialog and qgis_process show before any work) or with a
QgsProcessingException from the run, with a message naming the problem, no traceback, and no
output file left behind. Odd but valid images succeed on the before grid."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np
import pytest

from reliability.models import BAD_MODEL_CASES
from reliability.rasters import (BAD_IMAGES, SIZE, assert_on_grid, files_in, geotransform, in_other_crs, noise,
                                 read_band, write)

ALG = "deepcl:detectchanges"
FAST = {"TILE_SIZE": 64, "OVERLAP": 0, "DEVICE": "cpu"}


def parameters(before: Path, after: Path, model: Path, out: Path, **extra: Any) -> Dict[str, Any]:
    out.mkdir(exist_ok=True)
    return {"BEFORE": str(before), "AFTER": str(after), "MODEL": str(model), "CHANGE": str(out / "change.tif"),
            "CONFIDENCE": str(out / "confidence.tif"), "POLYGONS": str(out / "changes.gpkg"), **FAST, **extra}


def context():
    from qgis.core import QgsProcessingContext, QgsProject

    result = QgsProcessingContext()
    result.setProject(QgsProject.instance())
    return result


def refusal(params: Dict[str, Any]) -> str:
    """The message the user sees: checkParameterValues' refusal, else the run's exception."""
    import processing
    from qgis.core import QgsApplication, QgsProcessingException

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    ok, message = algorithm.checkParameterValues(params, context())
    if not ok:
        return message
    with pytest.raises(QgsProcessingException) as caught:
        processing.run(ALG, params, context=context())
    return str(caught.value)


def assert_clear(message: str, words: Sequence[str]) -> None:
    assert message and "Traceback" not in message and "\n" not in message.strip(), message
    for word in words:
        assert word.lower() in message.lower(), message


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image(deepcl_provider, good_pair, tiny_model_path, tmp_path, case):
    _assert_refused_in_words(good_pair, tiny_model_path, tmp_path, case)


def _assert_refused_in_words(good_pair, model: Path, tmp_path: Path, case: str) -> None:
    before, after = good_pair
    bad = BAD_IMAGES[case]
    image = bad.builder(tmp_path, before, after)
    before, after = (image, after) if bad.role == "before" else (before, image)
    out = tmp_path / "out"
    assert_clear(refusal(parameters(before, after, model, out)), bad.words)
    assert files_in(out) == []


@pytest.mark.parametrize("name, bands, words", [
    ("BANDS_BEFORE", [0, 1, 2], ["band 0 does not exist"]),
    ("BANDS_AFTER", [1, 1, 2], ["same band twice"]),
])
def test_bad_band_choice(deepcl_provider, good_pair, tiny_model_path, tmp_path, name, bands, words):
    out = tmp_path / "out"
    assert_clear(refusal(parameters(*good_pair, tiny_model_path, out, **{name: bands})), words)
    assert files_in(out) == []


@pytest.mark.parametrize("case", BAD_MODEL_CASES)
def test_bad_model_file(deepcl_provider, good_pair, bad_models, tmp_path, case):
    cases, marker = bad_models
    model, words = cases[case]
    out = tmp_path / "out"
    assert_clear(refusal(parameters(*good_pair, model, out)), words)
    assert files_in(out) == []
    assert not marker.exists()  # the hostile pickle's code never ran


def test_output_that_is_an_input(deepcl_provider, good_pair, tiny_model_path, tmp_path):
    before, after = good_pair
    original = before.read_bytes()
    params = {**parameters(before, after, tiny_model_path, tmp_path / "out"), "CHANGE": str(before)}
    assert_clear(refusal(params), ["one of the input images"])
    assert before.read_bytes() == original
    assert files_in(tmp_path / "out") == []


def test_output_in_a_missing_folder(deepcl_provider, good_pair, tiny_model_path, tmp_path):
    params = {**parameters(*good_pair, tiny_model_path, tmp_path / "out"), "CHANGE": str(tmp_path / "no" / "c.tif")}
    assert_clear(refusal(params), ["does not exist"])
    assert files_in(tmp_path / "out") == [] and not (tmp_path / "no").exists()


@pytest.mark.parametrize("name, file_name, words", [
    ("CHANGE", "change.img", ["change map is written as a GeoTIFF", "give a .tif file name instead of change.img"]),
    ("DISTANCE", "distance.png", ["distance map is written as a GeoTIFF", "instead of distance.png"]),
    ("POLYGONS", "changes.shp", ["change polygon layer is written as a GeoPackage", "give a .gpkg file name"]),
])
def test_output_named_for_another_format(deepcl_provider, good_pair, tiny_model_path, tmp_path, name, file_name,
                                         words):
    """Processing lets any raster or vector ending be typed in (qgis_process too); the parameters
    are refused before any run, with the engine's words."""
    from qgis.core import QgsApplication

    out = tmp_path / "out"
    out.mkdir()
    params = {**parameters(*good_pair, tiny_model_path, out), name: str(out / file_name)}
    ok, message = QgsApplication.processingRegistry().createAlgorithmById(ALG).checkParameterValues(params, context())
    assert not ok
    assert_clear(message, words)
    assert files_in(out) == []


def test_output_in_a_read_only_folder(deepcl_provider, good_pair, tiny_model_path, tmp_path, read_only_folder):
    listing = files_in(read_only_folder)
    params = {**parameters(*good_pair, tiny_model_path, tmp_path / "out"),
              "CHANGE": str(read_only_folder / "change.tif")}
    assert_clear(refusal(params), [str(read_only_folder)])
    assert files_in(read_only_folder) == listing and files_in(tmp_path / "out") == []


def run_ok(before: Path, after: Path, model: Path, out: Path) -> np.ndarray:
    import processing

    result = processing.run(ALG, parameters(before, after, model, out), context=context())
    for name in ("CHANGE", "CONFIDENCE"):
        assert_on_grid(Path(result[name]), before)
    assert not [name for name in files_in(out) if name.startswith(".")]
    return read_band(Path(result["CHANGE"]))


def test_existing_output_is_replaced(deepcl_provider, good_pair, tiny_model_path, tmp_path):
    """Processing asks before overwriting (the dialog, or the user's explicit path): the file is replaced."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "change.tif").write_bytes(b"old")
    run_ok(*good_pair, tiny_model_path, out)
    assert files_in(out) == ["change.tif", "changes.gpkg", "confidence.tif"]


@pytest.mark.parametrize("height, width", [(1, 1), (1, 37)])
def test_tiny_images(deepcl_provider, tiny_model_path, tmp_path, height, width):
    before = write(tmp_path / "b.tif", noise((3, height, width), 0), geotransform())
    after = write(tmp_path / "a.tif", noise((3, height, width), 1), geotransform())
    assert run_ok(before, after, tiny_model_path, tmp_path / "out").shape == (height, width)


def test_nan_infinity_and_constant_images(deepcl_provider, tiny_model_path, tmp_path):
    values = noise((3, SIZE[1], SIZE[0]), 0, np.float32)
    values[0, :5], values[1, 5:10], values[2, 10:15] = np.inf, -np.inf, np.nan
    before = write(tmp_path / "b.tif", values, geotransform())
    after = write(tmp_path / "a.tif", np.full((3, SIZE[1], SIZE[0]), 0.25, np.float32), geotransform())
    change = run_ok(before, after, tiny_model_path, tmp_path / "out")
    assert (change[:15] == 255).all() and (change[15:] != 255).all()


def test_other_crs_with_overlap(deepcl_provider, good_pair, tiny_model_path, tmp_path):
    before, after = good_pair
    change = run_ok(before, in_other_crs(after, tmp_path / "mercator.tif", 3857), tiny_model_path, tmp_path / "out")
    assert (change != 255).mean() > 0.9


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_while_the_host_has_gdal_exceptions_on(deepcl_provider, good_pair, tiny_model_path, tmp_path,
                                                         gdal_exceptions_on, case):
    """The plugin's own checks read the files with GDAL too: they gave bare RuntimeErrors, a traceback."""
    _assert_refused_in_words(good_pair, tiny_model_path, tmp_path, case)
