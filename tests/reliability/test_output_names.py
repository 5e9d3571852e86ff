"""Output names at the file system's limits: long names that fit are written (their temporary
names once did not fit, and failed the run after its work), names that do not fit are refused
before any work naming the user's file, a broken symbolic link is seen up front, a GeoPackage
path SQLite cannot open is refused up front, and outputs are put in place all or none whatever
the file system answers."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core import outputs as outputs_module
from deepcl_core.cli import main
from deepcl_core.errors import OutputError
from deepcl_core.grid import Grid
from deepcl_core.model_file import load_model, save_model
from deepcl_core.outputs import RasterOutputs, RasterSpec, check_name_fits
from reliability.rasters import files_in

FAST = ["--tile", "64", "--overlap", "0", "--device", "cpu"]


def detect(capsys, pair: Tuple[Path, Path], model: Path, change: Path, confidence: Path,
           polygons: Optional[Path] = None, *extra: str) -> Tuple[int, List[str]]:
    """Exit status and stderr lines of ``deepcl detect`` (in-process)."""
    arguments = ["detect", *map(str, pair), "--change", str(change), "--confidence", str(confidence),
                 "--model", str(model), *FAST, *extra]
    if polygons is not None:
        arguments += ["--polygons", str(polygons)]
    code = main(arguments)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_refused(code: int, lines: List[str], words: Sequence[str]) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("deepcl: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]


def name_of_bytes(count: int, letter: str = "m", suffix: str = ".tif") -> str:
    name = letter * ((count - len(suffix.encode())) // len(letter.encode())) + suffix
    assert len(name.encode()) == count
    return name


@pytest.mark.parametrize("name", [name_of_bytes(224, "é"), name_of_bytes(223), name_of_bytes(255)],
                         ids=["110-e-acute", "223-bytes", "255-bytes"])
def test_long_names_that_fit_are_written(capsys, good_pair, tiny_model_path, tmp_path, name):
    """The repro of the sweep: 110 × 'é' failed after the whole run with ENAMETOOLONG, the change
    map put in place and the confidence map and polygons not."""
    out = tmp_path / "o6"
    out.mkdir()
    code, lines = detect(capsys, good_pair, tiny_model_path, out / name, out / "p.tif", out / "x.gpkg")
    assert code == 0, lines
    assert files_in(out) == sorted([name, "p.tif", "x.gpkg"])  # all of them, nothing hidden left
    assert gdal.Open(str(out / name)).RasterXSize == 50


@pytest.mark.parametrize("name", [name_of_bytes(256), name_of_bytes(258, "é")], ids=["256-bytes", "258-bytes-e"])
def test_a_name_too_long_is_refused_up_front_naming_it(capsys, good_pair, tiny_model_path, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    code, lines = detect(capsys, good_pair, tiny_model_path, out / "c.tif", out / name)
    assert_refused(code, lines, [f"output name {name} is {len(name.encode())} bytes long", "choose a shorter name"])
    assert ".partial" not in lines[0]  # it named the hidden temporary file
    assert files_in(out) == []


def test_check_name_fits():
    folder = Path(os.getcwd())
    limit = os.pathconf(folder, "PC_NAME_MAX")
    fits = folder / name_of_bytes(limit - 5, suffix=".pt")
    check_name_fits(fits)
    check_name_fits(fits, (".ckpt",))
    with pytest.raises(OutputError, match=r"\.pt\.ckpt, written beside it, would be .* bytes shorter"):
        check_name_fits(folder / name_of_bytes(limit - 4, suffix=".pt"), (".ckpt",))
    with pytest.raises(OutputError, match=f"is {limit + 1} bytes long, more than the {limit}"):
        check_name_fits(folder / name_of_bytes(limit + 1))
    with pytest.raises(OutputError, match="folder name f+ is 300 bytes long"):  # a folder the writer would make
        check_name_fits(folder / ("f" * 300) / "model.pt")


def written_outputs(good_pair, out: Path, overwrite: bool = False) -> Tuple[RasterOutputs, List[Path]]:
    """Two outputs in ``out`` (change and confidence), written, not yet in place. (writer, paths)"""
    grid = Grid.of(gdal.Open(str(good_pair[0])))
    finals = [out / "change.tif", out / "confidence.tif"]
    writer = RasterOutputs([RasterSpec(path, gdal.GDT_Byte, 255, "x") for path in finals], grid, overwrite=overwrite)
    for path in finals:
        writer.write(path, np.zeros((grid.height, grid.width), np.uint8), 0)
    return writer, finals


def earlier_outputs(out: Path) -> None:
    """An earlier run's change and confidence maps in ``out``, and the change map's statistics."""
    for name in ("change.tif", "confidence.tif"):
        (out / name).write_bytes(b"earlier " + name.encode())
    (out / "change.tif.aux.xml").write_text("earlier statistics")


def writer_refused_the_second_output(good_pair, out: Path, monkeypatch, overwrite: bool = False):
    """Two outputs in ``out``, written; putting the second in place fails with EACCES. (writer, paths)"""
    writer, finals = written_outputs(good_pair, out, overwrite)
    put_in_place = outputs_module.put_in_place

    def refused_for_the_second(tmp: Path, final: Path, overwrite: bool) -> None:
        if final == finals[1]:
            raise PermissionError(errno.EACCES, "Permission denied", str(final))
        put_in_place(tmp, final, overwrite)

    monkeypatch.setattr(outputs_module, "put_in_place", refused_for_the_second)
    return writer, finals


def test_commit_puts_outputs_in_place_all_or_none_on_any_file_system_error(good_pair, tmp_path, monkeypatch):
    """An OSError (here EACCES) while putting the second output in place took back nothing: the
    first was left in place beside no second, and the error ended as an internal one."""
    out = tmp_path / "out"
    out.mkdir()
    writer, _ = writer_refused_the_second_output(good_pair, out, monkeypatch)
    with pytest.raises(OutputError, match="cannot put .*confidence.tif in place .Permission denied.; none of"):
        writer.commit()
    writer.abort()
    assert files_in(out) == []


def test_commit_with_overwrite_brings_back_the_files_it_was_to_replace(good_pair, tmp_path, monkeypatch):
    """With --overwrite the first output had replaced the earlier change map (and its statistics
    were deleted) when the second failed: the take-back then deleted the new map too, and the
    earlier one was lost with it."""
    out = tmp_path / "out"
    out.mkdir()
    earlier_outputs(out)
    writer, finals = writer_refused_the_second_output(good_pair, out, monkeypatch, overwrite=True)
    with pytest.raises(OutputError, match="the files they were to replace are as they were"):
        writer.commit()
    writer.abort()
    assert files_in(out) == ["change.tif", "change.tif.aux.xml", "confidence.tif"]
    assert [path.read_bytes() for path in finals] == [b"earlier change.tif", b"earlier confidence.tif"]
    assert (out / "change.tif.aux.xml").read_text() == "earlier statistics"


@pytest.mark.parametrize("held", ["change.tif", "confidence.tif"])
def test_an_earlier_output_that_cannot_be_moved_aside_is_left_as_it_was_with_the_others(good_pair, tmp_path,
                                                                                       monkeypatch, held):
    """With --overwrite, an earlier output the file system will not rename (on Windows: a layer
    loaded in QGIS; a file locked in the Finder) was counted as set aside before it was: the
    take-back then failed on the hidden name it never got, an internal error, and left the earlier
    files it had set aside under hidden names."""
    out = tmp_path / "out"
    out.mkdir()
    earlier_outputs(out)
    writer, finals = written_outputs(good_pair, out, overwrite=True)
    replace = os.replace

    def refused_for_the_held_file(source, target) -> None:
        if Path(source) == out / held:
            raise PermissionError(errno.EACCES, "Permission denied", str(source))
        replace(source, target)

    monkeypatch.setattr(os, "replace", refused_for_the_held_file)
    with pytest.raises(OutputError, match=f"cannot put .*{held} in place .Permission denied.; none of this run's "
                                          "outputs were kept, and the files they were to replace are as they were"):
        writer.commit()
    writer.abort()
    assert files_in(out) == ["change.tif", "change.tif.aux.xml", "confidence.tif"]
    assert [path.read_bytes() for path in finals] == [b"earlier change.tif", b"earlier confidence.tif"]
    assert (out / "change.tif.aux.xml").read_text() == "earlier statistics"


def test_an_output_folder_deleted_during_the_run_is_named_as_the_likely_cause(good_pair, tmp_path):
    """It was "… No such file or directory (is the disk full?)"."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    writer, _ = written_outputs(good_pair, out)
    writer.close()
    shutil.rmtree(out)
    with pytest.raises(OutputError, match=r"building the overviews of .*change.tif failed: .*No such file or "
                                          r"directory \(was the output folder moved or deleted during the run\?\)"):
        writer.build_overviews(lambda: False)
    writer.abort()


def test_a_model_file_name_that_fits_is_written(tiny_model, tmp_path):
    """train and calibrate --out of 235 × 'm': the work done, then ENAMETOOLONG from the temporary name."""
    path = tmp_path / name_of_bytes(255, suffix=".pt")
    save_model(tiny_model, path)
    assert files_in(tmp_path) == [path.name]
    assert load_model(path).config == tiny_model.config


def test_a_broken_symbolic_link_as_output_is_refused_up_front(capsys, good_pair, tiny_model_path, tmp_path):
    """It was seen only when the finished run put its outputs in place ("appeared while this run worked")."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "p.tif").symlink_to(Path("..") / "t" / "nowhere.tif")
    code, lines = detect(capsys, good_pair, tiny_model_path, out / "c.tif", out / "p.tif")
    assert_refused(code, lines, [f"output {out / 'p.tif'} is a broken symbolic link", "--overwrite"])
    assert files_in(out) == ["p.tif"] and (out / "p.tif").is_symlink()


def test_a_broken_symbolic_link_is_replaced_with_overwrite(capsys, good_pair, tiny_model_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "p.tif").symlink_to(Path("..") / "t" / "nowhere.tif")
    code, lines = detect(capsys, good_pair, tiny_model_path, out / "c.tif", out / "p.tif", None, "--overwrite")
    assert code == 0, lines
    assert not (out / "p.tif").is_symlink() and gdal.Open(str(out / "p.tif")) is not None  # the link, not its target
    assert not (tmp_path / "t").exists()


def folder_for_a_full_path_of(tmp_path: Path, total: int, name: str) -> Path:
    """A folder below ``tmp_path`` in which ``name``'s full path is ``total`` bytes long."""
    base = tmp_path.resolve()
    rest = total - len(os.fsencode(base)) - 2 - len(name)  # the folders' bytes, the slashes between them too
    parts = []
    while rest > 200:
        parts.append("d" * 150)
        rest -= 151
    parts.append("d" * rest)
    folder = base.joinpath(*parts)
    assert len(os.fsencode(folder / name)) == total
    folder.mkdir(parents=True)
    return folder


def test_a_geopackage_path_sqlite_cannot_open_is_refused_up_front(capsys, good_pair, tiny_model_path, tmp_path):
    """The polygons of a path of ~490 bytes failed after the whole run: "sqlite3_open(…) failed: unable to
    open database file" (SQLite takes 512 bytes, its journal's ending included, and the temporary name more)."""
    out = folder_for_a_full_path_of(tmp_path, 490, "x.gpkg")
    code, lines = detect(capsys, good_pair, tiny_model_path, tmp_path / "c.tif", tmp_path / "p.tif", out / "x.gpkg")
    assert_refused(code, lines, ["path too long for a GeoPackage: SQLite allows 512 bytes"])
    assert files_in(out) == [] and not (tmp_path / "c.tif").exists()


def test_a_long_geopackage_path_within_sqlites_limit_is_written(capsys, good_pair, tiny_model_path, tmp_path):
    out = folder_for_a_full_path_of(tmp_path, 460, "x.gpkg")
    code, lines = detect(capsys, good_pair, tiny_model_path, tmp_path / "c.tif", tmp_path / "p.tif", out / "x.gpkg")
    assert code == 0, lines
    assert files_in(out) == ["x.gpkg"]
