"""The bad-input matrix of issue 7 on the command line: every case ends with exit status 2 and
exactly one stderr line naming the problem, no traceback, and no output file (partial ones
included). The CLI runs in-process (``cli.main``), the code path of ``deepcl``, to keep the matrix
fast; tests/test_cli.py runs it as a real subprocess. Edge-case images that are valid must succeed
with outputs on the before grid."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest

from deepcl_core.cli import main
from deepcl_core.outputs import CHANGE_NODATA
from reliability.models import BAD_MODEL_CASES
from reliability.rasters import (BAD_IMAGES, SIZE, assert_on_grid, files_in, geotransform, in_other_crs, noise,
                                 read_band, write)

FAST = ["--tile", "64", "--overlap", "0", "--device", "cpu"]


def outputs(folder: Path) -> List[str]:
    return ["--change", str(folder / "change.tif"), "--confidence", str(folder / "confidence.tif"),
            "--polygons", str(folder / "changes.gpkg")]


def deepcl_detect(capsys, before: Path, after: Path, out: Path, model: Path, *extra: str) -> Tuple[int, List[str]]:
    """Exit status and stderr lines of ``deepcl detect``."""
    out.mkdir(exist_ok=True)
    code = main(["detect", str(before), str(after), *outputs(out), "--model", str(model), *FAST, *extra])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_clear_error(code: int, lines: List[str], words: Sequence[str]) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("deepcl: error: ") and "Traceback" not in lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image(capsys, good_pair, tiny_model_path, tmp_path, case):
    before, after = good_pair
    bad = BAD_IMAGES[case]
    image = bad.builder(tmp_path, before, after)
    before, after = (image, after) if bad.role == "before" else (before, image)
    out = tmp_path / "out"
    assert_clear_error(*deepcl_detect(capsys, before, after, out, tiny_model_path), bad.words)
    assert files_in(out) == []


@pytest.mark.parametrize("option, bands, words", [
    ("--bands-before", "0,1,2", ["band 0 does not exist"]),
    ("--bands-after", "1,1,2", ["same band twice"]),
])
def test_bad_band_choice(capsys, good_pair, tiny_model_path, tmp_path, option, bands, words):
    out = tmp_path / "out"
    assert_clear_error(*deepcl_detect(capsys, *good_pair, out, tiny_model_path, option, bands), words)
    assert files_in(out) == []


@pytest.mark.parametrize("case", BAD_MODEL_CASES)
def test_bad_model_file(capsys, good_pair, bad_models, tmp_path, case):
    cases, marker = bad_models
    model, words = cases[case]
    out = tmp_path / "out"
    assert_clear_error(*deepcl_detect(capsys, *good_pair, out, model), words)
    assert files_in(out) == []
    assert not marker.exists()  # the hostile pickle's code never ran


@pytest.mark.parametrize("which", ["change", "confidence"])
def test_output_that_is_an_input(capsys, good_pair, tiny_model_path, tmp_path, which):
    before, after = good_pair
    original = before.read_bytes()
    change = before if which == "change" else tmp_path / "c.tif"
    confidence = before if which == "confidence" else tmp_path / "p.tif"
    code = main(["detect", str(before), str(after), "--change", str(change), "--confidence", str(confidence),
                 "--model", str(tiny_model_path), "--overwrite", *FAST])
    assert_clear_error(code, capsys.readouterr().err.splitlines(), ["one of the input images"])
    assert before.read_bytes() == original  # even with --overwrite
    assert files_in(tmp_path) == ["inputs"]


WRONG_NAMES = [  # (option, file name, the message's words)
    ("--change", "change.img", ["change map is written as a GeoTIFF", "give a .tif file name instead of change.img"]),
    ("--confidence", "confidence.png", ["confidence map is written as a GeoTIFF", "instead of confidence.png"]),
    ("--distance", "distance", ["distance map is written as a GeoTIFF", "instead of distance"]),
    ("--polygons", "changes.shp", ["change polygon layer is written as a GeoPackage", "give a .gpkg file name"]),
]


@pytest.mark.parametrize("option, name, words", WRONG_NAMES, ids=[case[1] for case in WRONG_NAMES])
def test_output_named_for_another_format(capsys, good_pair, tiny_model_path, tmp_path, option, name, words):
    """A GeoTIFF named .img or .png would mislead whoever opens it: refused before any work."""
    out = tmp_path / "out"
    out.mkdir()
    named = {"--change": out / "change.tif", "--confidence": out / "confidence.tif", option: out / name}
    arguments = [argument for pair in named.items() for argument in map(str, pair)]
    code = main(["detect", *map(str, good_pair), *arguments, "--model", str(tiny_model_path), *FAST])
    assert_clear_error(code, capsys.readouterr().err.splitlines(), words)
    assert files_in(out) == []


def test_output_in_a_read_only_folder(capsys, good_pair, tiny_model_path, read_only_folder):
    before_listing = files_in(read_only_folder)
    code = main(["detect", *map(str, good_pair), *outputs(read_only_folder), "--model", str(tiny_model_path), *FAST])
    lines = capsys.readouterr().err.splitlines()
    assert_clear_error(code, lines, [str(read_only_folder)])
    assert files_in(read_only_folder) == before_listing


def test_existing_output_is_replaced_with_overwrite(capsys, good_pair, tiny_model_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "change.tif").write_bytes(b"old")
    code, lines = deepcl_detect(capsys, *good_pair, out, tiny_model_path, "--overwrite")
    assert code == 0, lines
    assert_on_grid(out / "change.tif", good_pair[0])
    assert files_in(out) == ["change.tif", "changes.gpkg", "confidence.tif"]


# --- odd but valid images: success, on the before grid ----------------------------------------------

def run_ok(capsys, before: Path, after: Path, out: Path, model: Path) -> np.ndarray:
    """Detect, check success and the grid, and return the change raster."""
    code, lines = deepcl_detect(capsys, before, after, out, model)
    assert code == 0, lines
    assert not any("Traceback" in line or "error" in line for line in lines), lines
    for name in ("change.tif", "confidence.tif"):
        assert_on_grid(out / name, before)
    assert not [name for name in files_in(out) if name.startswith(".")]  # no partial file left
    return read_band(out / "change.tif")


@pytest.mark.parametrize("height, width", [(1, 1), (1, 37), (37, 1)])
def test_tiny_images(capsys, tiny_model_path, tmp_path, height, width):
    before = write(tmp_path / "b.tif", noise((3, height, width), 0), geotransform())
    after = write(tmp_path / "a.tif", noise((3, height, width), 1), geotransform())
    change = run_ok(capsys, before, after, tmp_path / "out", tiny_model_path)
    assert change.shape == (height, width) and set(np.unique(change)) <= {0, 1}


def test_nan_and_infinity_become_nodata(capsys, tiny_model_path, tmp_path):
    values = noise((3, SIZE[1], SIZE[0]), 0, np.float32)
    values[0, :5] = np.inf
    values[1, 5:10] = -np.inf
    values[2, 10:15] = np.nan
    before = write(tmp_path / "b.tif", values, geotransform())
    after = write(tmp_path / "a.tif", noise((3, SIZE[1], SIZE[0]), 1, np.float32), geotransform())
    change = run_ok(capsys, before, after, tmp_path / "out", tiny_model_path)
    assert (change[:15] == CHANGE_NODATA).all() and (change[15:] != CHANGE_NODATA).all()


def test_constant_images(capsys, tiny_model_path, tmp_path):
    flat = np.full((3, SIZE[1], SIZE[0]), 1234, np.uint16)
    before = write(tmp_path / "b.tif", flat, geotransform())
    after = write(tmp_path / "a.tif", flat, geotransform())
    change = run_ok(capsys, before, after, tmp_path / "out", tiny_model_path)
    assert (change != CHANGE_NODATA).all()


def test_other_crs_with_overlap_is_reprojected(capsys, good_pair, tiny_model_path, tmp_path):
    before, after = good_pair
    mercator = in_other_crs(after, tmp_path / "mercator.tif", 3857)
    change = run_ok(capsys, before, mercator, tmp_path / "out", tiny_model_path)
    assert (change != CHANGE_NODATA).mean() > 0.9  # the same ground, up to resampling at the edges


def test_overlap_smaller_than_one_tile(capsys, good_pair, tiny_model_path, tmp_path):
    """The after image shares only a 5×4 pixel corner with the before image: that corner is
    detected, the rest is nodata."""
    before, _ = good_pair
    corner = write(tmp_path / "corner.tif", noise((3, 20, 20), 3),
                   geotransform(geotransform()[0] + 45 * 10.0, geotransform()[3] - 36 * 10.0))
    change = run_ok(capsys, before, corner, tmp_path / "out", tiny_model_path)
    assert (change[36:, 45:] != CHANGE_NODATA).all()
    assert (change != CHANGE_NODATA).sum() == 5 * 4
