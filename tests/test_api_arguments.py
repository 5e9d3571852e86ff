"""The Python API's arguments of the wrong type or value, from a script or a notebook: each refused
with one line in words (a DeepCLError) before any work, rather than taken for something else
(``overwrite="false"`` replaced existing outputs) or ending in a bare TypeError."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core import detect
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import InputError, OutputError
from deepcl_core.model_file import ModelBundle
from deepcl_core.outputs import check_output_name, check_output_paths

import core_test_helpers

outputs_in = partial(core_test_helpers.outputs_in, distance=False)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the model or opening the images fails the test: a refusal must come before both."""
    def started(*_: Any, **__: Any) -> None:
        raise AssertionError("detection started work (model or images) before refusing the arguments")

    monkeypatch.setattr(detect, "resolve_model", started)
    monkeypatch.setattr(detect, "_open_pair", started)


def refused(call: Callable[[], Any], error: type, words: str) -> str:
    with pytest.raises(error, match=words) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("field, value, words", [
    ("overwrite", "false", r"overwrite must be True or False; got 'false'"),
    ("overwrite", "no", r"overwrite must be True or False; got 'no'"),
    ("overwrite", 0, r"overwrite must be True or False; got 0"),
    ("overwrite", None, r"overwrite must be True or False; got None"),
    ("overviews", "no", r"overviews must be True or False; got 'no'"),
    ("overviews", 1, r"overviews must be True or False; got 1"),
    ("overlap_io", "yes", r"overlap_io must be True, False or None \(the device's choice\); got 'yes'"),
])
def test_yes_or_no_options_take_only_bools(levir_pair: Tuple[Path, Path], tmp_path: Path, no_work: None,
                                           field: str, value: Any, words: str) -> None:
    """A text is true whatever it says: ``overwrite="false"`` replaced existing outputs without a
    word, ``overviews="no"`` built them. Refused before the model is loaded; nothing is touched."""
    before, after = levir_pair
    outputs = outputs_in(tmp_path)
    outputs.change.write_bytes(b"kept")
    refused(lambda: detect_changes(before, after, outputs, DetectOptions(**{field: value})), InputError, words)
    assert outputs.change.read_bytes() == b"kept" and not outputs.confidence.exists()


def test_numpy_bools_are_taken_as_bools(levir_pair: Tuple[Path, Path], tiny_model: ModelBundle,
                                        tmp_path: Path) -> None:
    """numpy's bools (a data frame's column) are taken, as its numbers are, and become Python's."""
    before, after = levir_pair
    outputs = outputs_in(tmp_path)
    outputs.change.write_bytes(b"replaced")
    options = DetectOptions(tile_size=128, overlap=16, device="cpu", overwrite=np.bool_(True),
                            overviews=np.bool_(False), overlap_io=np.bool_(False))
    result = detect_changes(before, after, outputs, options, model=tiny_model)
    assert result.valid_pixels == 256 * 256
    assert type(options.overwrite) is bool and type(options.overviews) is bool and type(options.overlap_io) is bool
    assert gdal.Open(str(outputs.change)).RasterXSize == 256


@pytest.mark.parametrize("options, words", [
    (dict(tile_size=None), r"tile size must be a whole number; got None"),
    (dict(bands_before=1), r"bands before must be a list of band numbers \(1-based\), e.g. \[1, 2, 3\]; got 1"),
    (dict(bands_after="1,2,3"), r"bands after must be a list of band numbers .*; got '1,2,3'"),
    (dict(compression=["zstd"]), r"compression must be one of zstd, deflate; got \['zstd'\]"),
    (dict(precision={"fp32"}), r"precision must be one of auto, fp32, bf16; got \{'fp32'\}"),
])
def test_options_of_wrong_types_are_refused_in_words(levir_pair: Tuple[Path, Path], tmp_path: Path, no_work: None,
                                                     options: dict, words: str) -> None:
    """TypeErrors before: "'<' not supported between … 'NoneType' and 'int'", "'int' object is not
    iterable", "unhashable type: 'list'"."""
    before, after = levir_pair
    refused(lambda: detect_changes(before, after, outputs_in(tmp_path), DetectOptions(**options)), InputError, words)


@pytest.mark.parametrize("image", [None, 3, 2.5, ["before.tif"]])
@pytest.mark.parametrize("which", ["before", "after"])
def test_images_that_are_no_paths_are_refused_in_words(levir_pair: Tuple[Path, Path], tmp_path: Path, no_work: None,
                                                       image: Any, which: str) -> None:
    """"expected str, bytes or os.PathLike object, not NoneType" before."""
    before, after = levir_pair
    images = (image, after) if which == "before" else (before, image)
    refused(lambda: detect_changes(*images, outputs_in(tmp_path), DetectOptions()), InputError,
            rf"the {which} image must be a file's path or a name GDAL opens \(str, bytes or os.PathLike\); "
            rf"got {repr(image).replace('[', '.').replace(']', '.')}")


@pytest.mark.parametrize("callbacks, words", [
    (dict(progress="yes"), r"progress must be a function progress\(fraction, message\), or None; got 'yes'"),
    (dict(cancel=True), r"cancel must be a function cancel\(\) that returns True to stop, or None; got True"),
])
def test_callbacks_that_cannot_be_called_are_refused_before_the_model_loads(
        levir_pair: Tuple[Path, Path], tmp_path: Path, no_work: None, callbacks: dict, words: str) -> None:
    """"'str' object is not callable" before, and only once the model was loaded and the images read."""
    before, after = levir_pair
    refused(lambda: detect_changes(before, after, outputs_in(tmp_path), DetectOptions(), **callbacks), InputError,
            words)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field, value, words", [
    ("change", 5, r"the change map's file name must be a path \(str, bytes or os.PathLike\); got 5"),
    ("confidence", 1.5, r"the confidence map's file name must be a path .*; got 1.5"),
    ("polygons", ["p.gpkg"], r"the change polygon layer's file name must be a path .*; got \['p.gpkg'\]"),
])
def test_output_names_that_are_no_paths_are_refused_in_words(tmp_path: Path, field: str, value: Any,
                                                             words: str) -> None:
    """``DetectOutputs(change=5)``: a TypeError from os.fsdecode before."""
    names = dict(change=tmp_path / "c.tif", confidence=tmp_path / "p.tif")
    names[field] = value
    refused(lambda: DetectOutputs(**names), InputError, words)


@pytest.mark.parametrize("field, value, words", [
    ("change", "", r"the change map's file name is empty; give a .tif file name"),
    ("distance", b"", r"the distance map's file name is empty; give a .tif file name"),
    ("polygons", "", r"the change polygon layer's file name is empty; give a .gpkg file name"),
])
def test_empty_output_names_are_refused_in_words(tmp_path: Path, field: str, value: Any, words: str) -> None:
    """``change=""`` said "give a .tif file name instead of " with nothing after it."""
    names = dict(change=tmp_path / "c.tif", confidence=tmp_path / "p.tif")
    names[field] = value
    refused(DetectOutputs(**names).check_names, OutputError, words)


def test_empty_output_name_is_said_to_be_empty() -> None:
    """Front ends that check names themselves (Path("") is ".", whose name is "")."""
    for empty in (Path(""), Path("/")):
        message = refused(lambda: check_output_name(empty, "change map", "raster"), OutputError,
                          r"the change map's file name is empty; give a .tif file name")
        assert "instead of" not in message


@pytest.mark.parametrize("folder", ["/vsimem/out", "/vsimem", "/vsizip/out.zip", "/VSIMEM/x"])
def test_gdal_virtual_outputs_are_refused_in_words_before_any_work(levir_pair: Tuple[Path, Path], no_work: None,
                                                                   folder: str) -> None:
    """"output folder /vsimem does not exist; create it or choose another" before, and only once
    the model was loaded and the images opened; and the same for training's outputs."""
    before, after = levir_pair
    outputs = DetectOutputs(change=f"{folder}/c.tif", confidence=f"{folder}/p.tif")
    words = (r"GDAL virtual file systems \(/vsimem/, /vsizip/ …\) are not supported for outputs; "
             r"write to a folder on disk")
    message = refused(lambda: detect_changes(before, after, outputs, DetectOptions()), OutputError, words)
    assert "does not exist" not in message
    refused(lambda: check_output_paths([f"{folder}/model.pt"], [], overwrite=True, make_folders=True), OutputError,
            words)
    assert not [name for name in gdal.ReadDir("/vsimem/") or () if name in ("out", "c.tif", "p.tif")]


def test_real_folders_whose_names_start_alike_are_still_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only GDAL's own prefixes are refused: a folder on disk named vsimem is an ordinary folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vsimem").mkdir()
    check_output_paths([tmp_path / "vsimem" / "c.tif", Path("vsimem") / "p.tif", Path("vsimem_maps") / "d.tif"], [],
                       overwrite=False, make_folders=True)
