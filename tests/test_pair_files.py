"""Finding and reading labelled pairs on copies of real pairs: a label with nodata 0, colour labels,
a label of the before image's size on another grid, paletted labels, labels painted on a transparent
layer, vector labels, incomplete pairs (skipped with a warning), file-manager clutter and QGIS's
sidecar files, two files for one role, and pairs whose folders share a name."""
from __future__ import annotations

import logging
import math
import re
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from deepcl_core.errors import InputError
from deepcl_core.evaluation import EvaluateOptions, evaluate
from deepcl_core.grid import LABEL_GRID_TOLERANCE_PX, Grid
from deepcl_core.raster_io import open_raster
from deepcl_core.training import TrainOptions
from deepcl_core.training.pairs import PairFiles, find_pairs, read_label, split_pairs

from core_test_helpers import crop

PAIRS_LOGGER = "deepcl_core.training.pairs"


@pytest.fixture
def oscd(data_dir: Path) -> Path:
    return data_dir / "oscd" / "bercy"  # the smallest OSCD pair: 4-band UInt16 GeoTIFFs


@pytest.fixture
def levir_dirs(data_dir: Path) -> List[Path]:
    return sorted(p for p in (data_dir / "levir").iterdir() if p.name.startswith("test_"))[:3]


def label_of(pair: Path, label: Path) -> Tuple[np.ndarray, np.ndarray]:
    before = next(p for p in pair.iterdir() if p.name in ("before.tif", "before.png"))
    files = PairFiles(pair.name, before, before.with_name("after" + before.suffix), label, pair.parent.name)
    return read_label(files, open_raster(before, "before"))


def write_png(path: Path, bands: np.ndarray, alpha: bool = False) -> Path:
    """``bands`` (n, h, w) uint8 as a PNG; with ``alpha`` its last band is the alpha band."""
    mem = gdal.GetDriverByName("MEM").Create("", bands.shape[2], bands.shape[1], bands.shape[0], gdal.GDT_Byte)
    for index, band in enumerate(bands, start=1):
        mem.GetRasterBand(index).WriteArray(band)
    if alpha:
        mem.GetRasterBand(bands.shape[0]).SetColorInterpretation(gdal.GCI_AlphaBand)
    gdal.GetDriverByName("PNG").CreateCopy(str(path), mem)
    return path


def label_with_unlabelled_rows(label: Path, target: Path) -> Path:
    """``label`` with its first 20 rows 255, declared nodata: a 0/1 label with unlabelled pixels."""
    values = gdal.Open(str(label)).ReadAsArray()
    values[:20] = 255
    dataset = gdal.GetDriverByName("GTiff").CreateCopy(str(target), gdal.Open(str(label)))
    dataset.GetRasterBand(1).WriteArray(values)
    dataset.GetRasterBand(1).SetNoDataValue(255)
    dataset = None
    return target


def test_label_nodata_zero_still_means_no_change(oscd, tmp_path):
    original, original_valid = label_of(oscd, oscd / "label.tif")
    assert original_valid.all() and 0 < original.sum() < original.size
    # QGIS's Rasterize writes nodata 0; on the before grid, and on a coarser grid to be warped to it
    gdal.Translate(str(tmp_path / "same.tif"), str(oscd / "label.tif"), noData=0)
    label, valid = label_of(oscd, tmp_path / "same.tif")
    assert valid.all() and np.array_equal(label, original)
    before = gdal.Open(str(oscd / "before.tif"))
    step = before.GetGeoTransform()[1] * 2
    for name, nodata in (("coarse_0.tif", 0), ("coarse.tif", None)):
        gdal.Warp(str(tmp_path / name), str(oscd / "label.tif"), xRes=step, yRes=step, resampleAlg="near",
                  dstNodata=nodata)
    label, valid = label_of(oscd, tmp_path / "coarse_0.tif")
    reference, reference_valid = label_of(oscd, tmp_path / "coarse.tif")
    assert np.array_equal(valid, reference_valid) and valid.mean() > 0.99
    assert np.array_equal(label, reference)
    # another nodata value still marks pixels without a label
    label_with_unlabelled_rows(oscd / "label.tif", tmp_path / "nd255.tif")
    label, valid = label_of(oscd, tmp_path / "nd255.tif")
    assert not valid[:20].any() and valid[20:].all() and np.array_equal(label[20:], original[20:])


def test_a_label_whose_nodata_is_its_change_value_is_warned_of(oscd, tmp_path, caplog):
    """bercy's label as 0/255 with nodata 255 (as `gdal_translate -scale 0 1 0 255 -a_nodata 255`
    writes it): every changed pixel reads as unlabelled and the pair as one without change, which is
    now said. The same nodata on a 0/1 label, for unlabelled rows, is the usual convention: no warning."""
    assert gdal.Translate(str(tmp_path / "scaled.tif"), str(oscd / "label.tif"), scaleParams=[[0, 1, 0, 255]],
                          noData=255) is not None  # the dataset closes (and is written) as the expression ends
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        label, valid = label_of(oscd, tmp_path / "scaled.tif")
    assert not label[valid].any()
    assert "declares 255, a value of change, as nodata" in caplog.text
    assert f"gdal_edit.py -unsetnodata {tmp_path / 'scaled.tif'}" in caplog.text
    caplog.clear()
    label_with_unlabelled_rows(oscd / "label.tif", tmp_path / "nd255.tif")
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        label_of(oscd, tmp_path / "nd255.tif")
    assert "a value of change" not in caplog.text


def test_colour_label_marks_change_in_any_band(levir_dirs, tmp_path):
    pair = levir_dirs[0]
    original, _ = label_of(pair, pair / "label.png")
    assert 0 < original.sum() < original.size
    change = original.astype(np.uint8) * 255
    black = np.zeros_like(change)
    for name, bands in (("green.png", [black, change, black]), ("white.png", [change, change, change])):
        label, valid = label_of(pair, write_png(tmp_path / name, np.stack(bands)))
        assert valid.all() and np.array_equal(label, original), name
    # red on black with an alpha band: transparent pixels have no label
    opaque = np.full_like(change, 255)
    opaque[:16] = 0
    label, valid = label_of(pair, write_png(tmp_path / "red.png", np.stack([change, black, black, opaque]), alpha=True))
    assert not valid[:16].any() and valid[16:].all() and np.array_equal(label[16:], original[16:])


def test_colour_label_must_be_binary_in_every_band(levir_dirs, tmp_path):
    pair = levir_dirs[0]
    original, _ = label_of(pair, pair / "label.png")
    black = np.zeros(original.shape, np.uint8)
    grey_green = write_png(tmp_path / "label.png", np.stack([black, original.astype(np.uint8) * 128, black]))
    with pytest.raises(InputError, match="is not binary .* in every band: a colour label is white, red"):
        label_of(pair, grey_green)


def levir_layout(root: Path, sources: List[Path]) -> Path:
    """The LEVIR-CD layout (A/, B/, label/ with shared file names) made of copies of real pairs."""
    for folder in ("A", "B", "label"):
        (root / folder).mkdir(parents=True)
    for source in sources:
        for role, folder in (("before", "A"), ("after", "B"), ("label", "label")):
            shutil.copy(source / f"{role}.png", root / folder / f"{source.name}.png")
    return root


def warnings_of(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == PAIRS_LOGGER and r.levelno == logging.WARNING]


def test_incomplete_levir_pairs_are_skipped_with_a_warning(levir_dirs, tmp_path, caplog):
    root = levir_layout(tmp_path / "levir", levir_dirs)
    complete, no_after, no_label = (d.name for d in levir_dirs)
    (root / "B" / f"{no_after}.png").unlink()
    (root / "label" / f"{no_label}.png").unlink()
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert [p.name for p in pairs] == [f"levir/{complete}"]
    assert sorted(warnings_of(caplog)) == sorted([f"skipped levir/{no_after}: no B/{no_after}.png",
                                                  f"skipped levir/{no_label}: no label/{no_label}.png"])


def test_incomplete_pair_folders_are_skipped_with_a_warning(data_dir, tmp_path, caplog):
    dsifn = tmp_path / "dsifn"
    for name in ("2_4", "3_4", "4_4"):
        shutil.copytree(data_dir / "dsifn" / name, dsifn / name)
    (dsifn / "2_4" / "label.png").rename(dsifn / "2_4" / "label_mask.png")
    for role in ("before", "after"):
        (dsifn / "4_4" / f"{role}.png").unlink()
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert [p.name for p in pairs] == ["3_4"]
    assert warnings_of(caplog) == ["skipped folder dsifn/2_4: it has before and after but no label.*",
                                   "skipped folder dsifn/4_4: it has label but no before.* or after.*"]


def test_file_manager_clutter_is_not_taken_for_images(levir_dirs, tmp_path, caplog):
    root = levir_layout(tmp_path / "levir", levir_dirs[:2])
    for folder in ("A", "B", "label"):
        for name in ("Thumbs.db", "desktop.ini", ".DS_Store"):
            (root / folder / name).write_bytes(b"\xd0\xcf\x11\xe0 not a raster")
    (root / "A" / "DESKTOP.INI").write_text("[.ShellClassInfo]\n")
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert [p.name for p in pairs] == [f"levir/{d.name}" for d in levir_dirs[:2]]
    assert warnings_of(caplog) == []
    label, valid = read_label(pairs[0], open_raster(pairs[0].before, "before"))
    assert valid.all() and np.array_equal(label, label_of(levir_dirs[0], levir_dirs[0] / "label.png")[0])


def test_two_images_for_one_role_are_refused(levir_dirs, tmp_path):
    pair = shutil.copytree(levir_dirs[0], tmp_path / "levir" / levir_dirs[0].name)
    gdal.Translate(str(pair / "before.tif"), str(pair / "before.png"), format="GTiff")
    with pytest.raises(InputError) as error:
        find_pairs([tmp_path])
    assert str(error.value) == f"pair folder {pair} has two before images (before.png, before.tif); keep one"


def shifted_label_pair(oscd: Path, root: Path, shift: Tuple[int, int]) -> Path:
    """A 256×256 crop of the pair at (100, 100) whose label is the window of the same size cut
    ``shift`` pixels (x, y) from it: the same pixel size, on another grid."""
    root.mkdir(parents=True)
    for role in ("before", "after"):
        crop(oscd / f"{role}.tif", root / f"{role}.tif", 100, 100, 256, 256)
    crop(oscd / "label.tif", root / "label.tif", 100 + shift[0], 100 + shift[1], 256, 256)
    return root


def test_label_of_the_same_size_on_another_grid_is_warped(oscd, tmp_path):
    shifted = shifted_label_pair(oscd, tmp_path / "shifted" / "bercy", (-60, -40))
    correct, correct_valid = label_of(shifted, crop(oscd / "label.tif", tmp_path / "correct.tif", 100, 100, 256, 256))
    assert correct_valid.all()
    label, valid = label_of(shifted, shifted / "label.tif")
    # the shifted label covers columns 0..195 and rows 0..215 of the crop; nothing outside
    overlap = np.zeros_like(valid)
    overlap[:216, :196] = True
    assert np.array_equal(valid, overlap)
    assert 0 < label[overlap].sum() < overlap.sum() and np.array_equal(label[overlap], correct[overlap])
    assert not label[~overlap].any()
    # evaluation (the bundled model, so that it finds change) scores it as the correct label without
    # the pixels the shifted one does not cover
    reference = shutil.copytree(shifted, tmp_path / "reference" / "bercy")
    masked = gdal.GetDriverByName("GTiff").CreateCopy(str(reference / "label.tif"),
                                                      gdal.Open(str(tmp_path / "correct.tif")))
    values = correct.copy()
    values[~overlap] = 255
    masked.GetRasterBand(1).WriteArray(values)
    masked.GetRasterBand(1).SetNoDataValue(255)
    masked = None
    reports = [evaluate(EvaluateOptions(model=None, data_dirs=[folder.parent], device="cpu"))
               for folder in (shifted, reference)]
    scores = [report["per_pair"]["bercy"] for report in reports]
    assert scores[0]["tp"] + scores[0]["fp"] + scores[0]["fn"] + scores[0]["tn"] == overlap.sum()
    assert scores[0]["f1"] > 0 and scores[0] == scores[1]


def test_a_label_with_nodata_255_on_another_grid_keeps_its_unchanged_pixels(oscd, tmp_path):
    """Warped onto the before grid, a label declaring nodata 255 came out declaring 0 (GDAL's Python
    options read the text of a list, "[255.0]", as 0): every unchanged pixel was dropped."""
    shifted = shifted_label_pair(oscd, tmp_path / "shifted" / "bercy", (-60, -40))
    stored = gdal.Open(str(shifted / "label.tif"), gdal.GA_Update)
    values = stored.ReadAsArray()
    values[100:110] = 255  # rows without a label: rows 60-69 of the before image
    stored.GetRasterBand(1).WriteArray(values)
    stored.GetRasterBand(1).SetNoDataValue(255)
    stored = None
    correct, _ = label_of(shifted, crop(oscd / "label.tif", tmp_path / "correct.tif", 100, 100, 256, 256))
    label, valid = label_of(shifted, shifted / "label.tif")
    expected = np.zeros_like(valid)
    expected[:216, :196] = True
    expected[60:70] = False
    assert np.array_equal(valid, expected)
    assert np.array_equal(label[expected], correct[expected]) and (label[expected] == 0).sum() > 0.9 * expected.sum()


def test_label_within_a_hundredth_of_a_pixel_is_read_as_it_is(oscd, tmp_path):
    pair = shifted_label_pair(oscd, tmp_path / "bercy", (0, 0))
    before = Grid.of(open_raster(pair / "before.tif", "before"))
    x0, dx, rx, y0, ry, dy = before.geotransform
    for offset, as_it_is in ((0.005, True), (0.5, False)):  # in pixels
        label = replace(before, geotransform=(x0 + offset * dx, dx, rx, y0, ry, dy))
        assert label.lies_on(before, LABEL_GRID_TOLERANCE_PX) == as_it_is, offset


def test_pairs_sharing_a_folder_name_get_their_parent_folders(data_dir, levir_dirs, tmp_path, tiny_model_path):
    dsifn = data_dir / "dsifn" / "2_4"
    ev = tmp_path / "ev"
    for folder in ("dup1/site", "dup2/site", "dup1/x/deep", "dup2/x/deep"):
        shutil.copytree(dsifn, ev / folder)
    shutil.copytree(data_dir / "dsifn" / "3_4", ev / "dup1" / "3_4")  # unique: keeps its name
    for folder in ("dup1", "dup2"):
        levir_layout(ev / folder / "levir", levir_dirs[:1])
    pairs = find_pairs([ev / "dup1", ev / "dup2"])
    tile = levir_dirs[0].name
    assert sorted(p.name for p in pairs) == sorted(["3_4", "dup1/site", "dup2/site", "dup1/x/deep", "dup2/x/deep",
                                                    f"dup1/levir/{tile}", f"dup2/levir/{tile}"])
    assert {p.name: p.before.parent for p in pairs}["dup2/site"] == ev / "dup2" / "site"
    report = evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[ev / "dup1", ev / "dup2"], device="cpu"))
    assert report["pairs"] == len(report["per_pair"]) == 7


def test_a_plain_label_on_a_before_image_placed_by_gcps_is_placed_by_them(oscd, tmp_path):
    """The before image placed by ground control points (warped north-up when read), its label a
    plain raster on the same pixels: the label follows the before image, as the georeferenced
    label of the same pixels does (it was refused: "without georeferencing the two cannot be aligned")."""
    pair = shifted_label_pair(oscd, tmp_path / "bercy", (0, 0))
    source = gdal.Open(str(pair / "before.tif"))
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    turn = math.radians(20)  # a turned scan: its north-up grid is larger than its pixels
    gcps = [gdal.GCP(x0 + dx * (col * math.cos(turn) + row * math.sin(turn)),
                     y0 + dy * (row * math.cos(turn) - col * math.sin(turn)), 0, col, row)
            for col in (0, 256) for row in (0, 256)]
    gdal.Translate(str(tmp_path / "before.tif"), source, GCPs=gcps, outputSRS=source.GetProjection())
    shutil.move(tmp_path / "before.tif", pair / "before.tif")
    gdal.Translate(str(tmp_path / "georeferenced.tif"), str(pair / "label.tif"), GCPs=gcps,
                   outputSRS=source.GetProjection())
    values = gdal.Open(str(pair / "label.tif")).ReadAsArray()
    plain = gdal.GetDriverByName("GTiff").Create(str(pair / "plain.tif"), 256, 256, 1, gdal.GDT_Byte)
    plain.GetRasterBand(1).WriteArray(values)
    plain = None
    plain = gdal.Open(str(pair / "plain.tif"))
    assert plain.GetGeoTransform(can_return_null=True) is None and not plain.GetGCPCount()
    plain = None
    label, valid = label_of(pair, pair / "plain.tif")
    expected, expected_valid = label_of(pair, tmp_path / "georeferenced.tif")
    np.testing.assert_array_equal(label, expected)
    np.testing.assert_array_equal(valid, expected_valid)
    assert label.shape != (256, 256) and label.sum() > 0


def test_pairs_below_linked_folders_are_found_once_each(data_dir, tmp_path):
    """A data set linked into a data folder is searched (Path.rglob passed links over: `evaluate` of
    a folder of links found no pair, and of one holding a pair and a link, that pair alone); a link
    back to an ancestor does not loop, and a folder seen through two links gives its pairs once."""
    linked = tmp_path / "linked"
    shutil.copytree(data_dir / "dsifn" / "0_2", linked / "0_2")
    (linked / "levir").symlink_to(data_dir / "levir", target_is_directory=True)
    (linked / "0_2" / "up").symlink_to("..", target_is_directory=True)  # a loop
    (linked / "levir again").symlink_to(data_dir / "levir", target_is_directory=True)
    levir = find_pairs([data_dir / "levir"])
    pairs = find_pairs([linked])
    assert sorted(p.name for p in pairs) == sorted(["0_2", *(p.name for p in levir)])
    outside_levir = {p.before.resolve() for p in pairs} - {p.before.resolve() for p in levir}
    assert outside_levir == {(linked / "0_2" / "before.png").resolve()}
    only_links = tmp_path / "only_links"
    only_links.mkdir()
    (only_links / "dsifn").symlink_to(data_dir / "dsifn", target_is_directory=True)
    dsifn = find_pairs([only_links])
    assert [(p.name, p.group) for p in dsifn] == [(p.name, p.group) for p in find_pairs([data_dir / "dsifn"])]
    assert len(dsifn) == 10 and find_pairs([only_links]) == dsifn  # the same order every time


def paletted_png(path: Path, indices: np.ndarray, colours: List[Tuple[int, int, int, int]]) -> Path:
    """``indices`` (h, w) as a one-band paletted PNG with the colour table ``colours``; an entry of
    alpha 0 is written as the PNG's transparent index (GDAL reads it as nodata)."""
    mem = gdal.GetDriverByName("MEM").Create("", indices.shape[1], indices.shape[0], 1, gdal.GDT_Byte)
    band = mem.GetRasterBand(1)
    band.WriteArray(indices.astype(np.uint8))
    table = gdal.ColorTable()
    for index, colour in enumerate(colours):
        table.SetColorEntry(index, colour)
    band.SetColorTable(table)
    band.SetColorInterpretation(gdal.GCI_PaletteIndex)
    if any(colour[3] == 0 for colour in colours):
        band.SetNoDataValue(next(i for i, colour in enumerate(colours) if colour[3] == 0))
    gdal.GetDriverByName("PNG").CreateCopy(str(path), mem)
    return path


def test_a_paletted_label_is_read_by_the_colours_qgis_draws(data_dir, tmp_path):
    """DSIFN 0_2's label as PIL's convert('P', palette=ADAPTIVE, colors=2) writes a red-on-black mask:
    red at index 0, black at 1. Read as indices it was inverted: the unchanged pixels taken for
    change, as this test's message counts them. Palettes in index order, one whose black index 0 is the
    PNG's transparent colour (nodata 0: still no change), and one that draws class 1 in a colour
    of no full channels (the Pascal VOC palette's dark red: read as indices, as before) read alike."""
    pair = data_dir / "dsifn" / "0_2"
    original, _ = label_of(pair, pair / "label.png")
    assert 0 < original.sum() < original.size / 2
    red, black, white = (255, 0, 0, 255), (0, 0, 0, 255), (255, 255, 255, 255)
    for name, indices, colours in (("red_at_0.png", 1 - original, [red, black]),
                                   ("in_order.png", original, [black, white]),
                                   ("transparent_black.png", original, [(0, 0, 0, 0), red]),
                                   ("voc.png", original, [black, (128, 0, 0, 255)])):
        label, valid = label_of(pair, paletted_png(tmp_path / name, indices, colours))
        assert valid.all(), name
        assert np.array_equal(label, original), f"{name}: {int(label.sum())} changed pixels for {int(original.sum())}"


def test_a_label_painted_on_a_transparent_layer_is_warned_of(data_dir, tmp_path, caplog):
    """DSIFN 0_2's label painted red on a transparent layer (RGBA, alpha 0 where nothing changed):
    its valid pixels are the changed ones alone (precision 1, tn 0 in evaluate), which was silent.
    Transparency may mean "no label", so the pixels stay out, but the warning says so and gives
    the command that flattens the label onto black, which reads as the original label."""
    pair = data_dir / "dsifn" / "0_2"
    original, _ = label_of(pair, pair / "label.png")
    change = original.astype(np.uint8) * 255
    black = np.zeros_like(change)
    painted = write_png(tmp_path / "label.png", np.stack([change, black, black, change]), alpha=True)
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        label, valid = label_of(pair, painted)
    assert np.array_equal(valid, original.astype(bool)) and label[valid].all()
    said = warnings_of(caplog)
    unlabelled = int((original == 0).sum())
    assert len(said) == 1 and said[0].startswith(
        f"the label of pair 0_2 has no unchanged pixel: it marks change wherever it has a label, and its "
        f"{unlabelled} pixels without a label"), said
    command = re.search(r"flatten it onto black \((gdal_translate [^)]*)\)", said[0])
    assert command is not None, said[0]
    subprocess.run(shlex.split(command.group(1)), check=True, capture_output=True)
    label, valid = label_of(pair, tmp_path / "flat.png")
    assert valid.all() and np.array_equal(label, original)
    # change as 1s and nodata 255 elsewhere: the same warning, without a command (255 lies beneath)
    caplog.clear()
    gdal.Translate(str(tmp_path / "nodata.tif"), str(pair / "label.png"), noData=255, format="GTiff")
    nodata = gdal.Open(str(tmp_path / "nodata.tif"), gdal.GA_Update)
    nodata.GetRasterBand(1).WriteArray(np.where(original > 0, 1, 255).astype(np.uint8))
    nodata = None
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        label_of(pair, tmp_path / "nodata.tif")
    assert [m for m in warnings_of(caplog) if "has no unchanged pixel" in m and "write 0 in them" in m]
    # a label with unchanged pixels beside transparent ones is not warned of
    caplog.clear()
    opaque = np.full_like(change, 255)
    opaque[:16] = 0
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        label_of(pair, write_png(tmp_path / "rows.png", np.stack([change, black, black, opaque]), alpha=True))
    assert warnings_of(caplog) == []


def test_qgis_sidecar_files_and_world_files_are_not_taken_for_images(data_dir, levir_dirs, tmp_path, caplog):
    """QGIS's default style (label.qml, from "Save as Default") and metadata (before.qmd), and world
    files (.pngw, .wld, .j2w, …) beside a pair's images: the pair was refused as one with "two label
    images (label.png, label.qml)". In the LEVIR-CD layout they made pairs "skipped: no B/x.qml"."""
    pair = shutil.copytree(data_dir / "dsifn" / "0_2", tmp_path / "dsifn" / "0_2")
    style = Path(__file__).resolve().parents[1] / "resources" / "styles" / "change.qml"
    shutil.copy(style, pair / "label.qml")
    (pair / "before.qmd").write_text('<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'>\n'
                                     '<qgis version="3.22"><identifier>before</identifier></qgis>\n')
    for role in ("before", "after", "label"):  # one world file, in QGIS's and GDAL's spellings
        for suffix in (".pngw", ".pgw", ".wld"):
            (pair / f"{role}{suffix}").write_text("2.0\n0.0\n0.0\n-2.0\n1.0\n-1.0\n")
    gdal.Info(str(pair / "label.png"), stats=True)  # label.png.aux.xml
    for suffix in (".gpkg-wal", ".gpkg-shm"):  # SQLite's, beside a GeoPackage image QGIS has open
        (pair / f"after{suffix}").write_bytes(b"\0" * 32)
    root = levir_layout(tmp_path / "levir", levir_dirs[:2])
    tile = levir_dirs[0].name
    shutil.copy(style, root / "label" / f"{tile}.qml")
    for suffix in (".pngw", ".j2w", ".tifw", ".qmd"):
        (root / "A" / f"{tile}{suffix}").write_text("1.0\n0.0\n0.0\n-1.0\n0.5\n-0.5\n")
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert warnings_of(caplog) == []
    assert [(p.name, p.label.name) for p in pairs] == [("0_2", "label.png")] + [
        (f"levir/{d.name}", f"{d.name}.png") for d in levir_dirs[:2]]
    label, valid = read_label(pairs[0], open_raster(pairs[0].before, "before"))
    assert valid.all() and np.array_equal(label, label_of(data_dir / "dsifn" / "0_2", pair / "label.png")[0])


def test_a_vector_label_is_refused_with_how_to_rasterise_it(oscd, tmp_path):
    """bercy's change as polygons in a shapefile (label.shp, .shx, .dbf, .prj, .cpg): the pair was
    refused as one with "3 label images (label.dbf, label.shp, label.shx); keep one". Now the
    shapefile is the label, and reading it says to rasterise it, with a command that gives back
    bercy's label."""
    pair = tmp_path / "oscd" / "bercy"
    pair.mkdir(parents=True)
    for role in ("before", "after"):
        shutil.copy(oscd / f"{role}.tif", pair / f"{role}.tif")
    raster = gdal.Open(str(oscd / "label.tif"))
    srs = osr.SpatialReference(wkt=raster.GetProjection())
    vector = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(str(pair / "label.shp"))
    layer = vector.CreateLayer("label", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("change", ogr.OFTInteger))
    band = raster.GetRasterBand(1)
    assert gdal.Polygonize(band, band, layer, 0) == 0 and layer.GetFeatureCount() > 0  # change only
    layer = band = None  # before their data sets (GDAL's bindings do not keep those alive)
    vector = raster = None  # written as it closes
    assert {p.suffix for p in pair.iterdir() if p.stem == "label"} >= {".shp", ".shx", ".dbf", ".prj"}
    pairs = find_pairs([tmp_path])
    assert [(p.name, p.label.name) for p in pairs] == [("bercy", "label.shp")]
    with pytest.raises(InputError) as error:
        read_label(pairs[0], open_raster(pairs[0].before, "before"))
    message = str(error.value)
    del error  # its traceback holds GDAL datasets; freed at exit with the frame, GDAL 3.6 crashes
    assert message.startswith(f"label {pair / 'label.shp'} is a vector layer (polygons of change), not a raster; "
                              "rasterise it onto the before image's grid first, 1 inside the polygons and 0 outside")
    command = re.search(r"in the before image's CRS: (gdal_rasterize .*), then remove label\.shp$", message)
    assert command is not None, message
    subprocess.run(shlex.split(command.group(1)), check=True, capture_output=True)
    (pair / "label.shp").unlink()
    pairs = find_pairs([tmp_path])
    assert [p.label.name for p in pairs] == ["label.tif"]
    label, valid = read_label(pairs[0], open_raster(pairs[0].before, "before"))
    original, _ = label_of(oscd, oscd / "label.tif")
    assert valid.all() and np.array_equal(label, original)


def test_a_levir_folder_without_its_label_folder_is_warned_of(levir_dirs, tmp_path, caplog):
    """A/ and B/ beside labels/ (or Label/, gt/, or nothing): no pair, and no word, was found there."""
    root = levir_layout(tmp_path / "levir", levir_dirs[:2])
    expected = []
    for name, hint in (("labels", "; rename labels/ to label/"), ("Label", "; rename Label/ to label/"),
                       ("gt", "; rename gt/ to label/"), (None, "")):
        if name is None:
            shutil.rmtree(root / "label")
        else:
            (root / "label").rename(root / name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
            assert find_pairs([tmp_path]) == []
        assert warnings_of(caplog) == [f"skipped folder {tmp_path.name}/levir: it has A/ and B/ but no label/ folder"
                                       f"{hint}"], name
        if name is not None:
            (root / name).rename(root / "label")
        expected.append(name)
    assert expected == ["labels", "Label", "gt", None]


def test_too_few_pairs_to_hold_out_says_how_to_train_without_validation(data_dir, tmp_path):
    """Three real pairs, each its own data set: a fraction holds out none. The message named --val
    only; --val-fraction 0 (no validation, the last epoch kept) trains on all three."""
    for name in ("0_2", "1_1", "2_4"):
        shutil.copytree(data_dir / "dsifn" / name, tmp_path / f"ds_{name}" / name)
    pairs = find_pairs([tmp_path])
    assert len(pairs) == 3 and len({p.group for p in pairs}) == 3
    with pytest.raises(InputError) as error:
        split_pairs(pairs, 0.2, seed=0)
    assert str(error.value).endswith("give validation folders with --val, or train without validation with "
                                     "--val-fraction 0")
    from deepcl_core.training.trainer import _split

    assert _split(TrainOptions(data_dirs=[tmp_path], out=tmp_path / "m.pt", val_fraction=0.0)) == (pairs, [])


def dsifn_layout(root: Path, sources: List[Path]) -> Path:
    """DSIFN-CD's own layout: A/x.jpg, B/x.jpg (JPEG images), label/x.png, made of real DSIFN pairs."""
    for folder in ("A", "B", "label"):
        (root / folder).mkdir(parents=True)
    for source in sources:
        for role, folder in (("before", "A"), ("after", "B")):
            gdal.Translate(str(root / folder / f"{source.name}.jpg"), str(source / f"{role}.png"), format="JPEG")
        shutil.copy(source / "label.png", root / "label" / f"{source.name}.png")
    for sidecar in root.rglob("*.aux.xml"):
        sidecar.unlink()
    return root


def test_a_levir_layout_pairs_files_by_name_whatever_their_endings(data_dir, tmp_path, caplog):
    """A/x.jpg, B/x.jpg, label/x.png (DSIFN-CD as distributed) make the pair x, as before.jpg,
    after.jpg, label.png do in a pair folder. Every pair was skipped with two contradictory warnings
    ("no label/x.jpg", "no A/x.png and no B/x.png"). A file genuinely missing still skips its pair,
    with one warning naming it with the ending of its folder's files."""
    sources = [data_dir / "dsifn" / name for name in ("0_2", "1_1", "2_4")]
    root = dsifn_layout(tmp_path / "dsifn", sources)
    (root / "B" / "2_4.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert [(p.name, p.before.name, p.after.name, p.label.name) for p in pairs] == [
        ("dsifn/0_2", "0_2.jpg", "0_2.jpg", "0_2.png"), ("dsifn/1_1", "1_1.jpg", "1_1.jpg", "1_1.png")]
    assert warnings_of(caplog) == ["skipped dsifn/2_4: no B/2_4.jpg"]
    label, valid = read_label(pairs[0], open_raster(pairs[0].before, "before"))
    assert valid.all() and np.array_equal(label, label_of(sources[0], sources[0] / "label.png")[0])


def test_two_images_of_one_name_in_a_levir_folder_are_refused(data_dir, tmp_path):
    """A/x.jpg beside A/x.png: which is the before image of pair x? Refused naming both, as two
    before.* in a pair folder are, rather than one taken at random."""
    root = dsifn_layout(tmp_path / "dsifn", [data_dir / "dsifn" / "0_2"])
    shutil.copy(data_dir / "dsifn" / "0_2" / "before.png", root / "A" / "0_2.png")
    with pytest.raises(InputError) as error:
        find_pairs([tmp_path])
    assert str(error.value) == (f"folder {root / 'A'} has two images named 0_2 (0_2.jpg, 0_2.png): the pair's images "
                                "are matched by name across A/, B/ and label/; keep one")


def test_a_missing_levir_file_is_named_with_the_ending_of_its_own_folder(data_dir, tmp_path, caplog):
    """Only A/2_4.jpg of DSIFN-CD's pair 2_4: the warning read "no B/2_4.jpg and no label/2_4.jpg", though
    its labels are PNGs. Each missing file is named with the ending most files of its folder have, else
    as x.* (a label/ of one PNG and one GeoTIFF)."""
    sources = [data_dir / "dsifn" / name for name in ("0_2", "1_1", "2_4")]
    for data_set in ("dsifn", "mixed"):
        dsifn_layout(tmp_path / data_set, sources)
        (tmp_path / data_set / "label" / "2_4.png").unlink()
    (tmp_path / "dsifn" / "B" / "2_4.jpg").unlink()
    labels = tmp_path / "mixed" / "label"
    assert gdal.Translate(str(labels / "1_1.tif"), str(labels / "1_1.png"), format="GTiff") is not None
    (labels / "1_1.png").unlink()
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert [p.name for p in pairs] == ["dsifn/0_2", "dsifn/1_1", "mixed/0_2", "mixed/1_1"]
    assert warnings_of(caplog) == ["skipped dsifn/2_4: no B/2_4.jpg and no label/2_4.png",
                                   "skipped mixed/2_4: no label/2_4.*"]


def test_envi_and_erdas_sidecar_files_are_not_taken_for_images(data_dir, tmp_path, caplog):
    """DSIFN pairs stored as ENVI (x.dat with its header x.hdr) and ERDAS Imagine (x.img with overviews
    in x.rrd) in the LEVIR-CD layout, and a pair folder's before.dat with before.hdr: each image and its
    sidecar counted as two images of one name, and the folders were refused. Sidecars of those formats
    (.hdr, .rrd, .ige, .stx, .blw) are passed over, as a GeoTIFF's .ovr is."""
    sources = [data_dir / "dsifn" / name for name in ("0_2", "1_1")]
    root = dsifn_layout(tmp_path / "dsifn", sources)
    for source in sources:
        for folder, role, driver, ending in (("A", "before", "ENVI", ".dat"), ("B", "after", "HFA", ".img")):
            (root / folder / f"{source.name}.jpg").unlink()
            gdal.Translate(str(root / folder / f"{source.name}{ending}"), str(source / f"{role}.png"), format=driver)
        subprocess.run(["gdaladdo", "-q", "--config", "HFA_USE_RRD", "YES", str(root / "B" / f"{source.name}.img"),
                        "2"], check=True)  # overviews in x.rrd
        for ending in (".ige", ".stx", ".blw"):  # a large image's spill file, ESRI statistics and world file
            (root / "B" / f"{source.name}{ending}").write_bytes(b"\0" * 16)
    pair = shutil.copytree(data_dir / "dsifn" / "2_4", tmp_path / "pairs" / "2_4")
    assert gdal.Translate(str(pair / "before.dat"), str(pair / "before.png"), format="ENVI") is not None
    (pair / "before.png").unlink()
    assert {p.suffix for p in root.rglob("*")} >= {".hdr", ".rrd"} and (pair / "before.hdr").is_file()
    with caplog.at_level(logging.WARNING, logger=PAIRS_LOGGER):
        pairs = find_pairs([tmp_path])
    assert warnings_of(caplog) == []
    assert [(p.name, p.before.name, p.after.name, p.label.name) for p in pairs] == [
        ("dsifn/0_2", "0_2.dat", "0_2.img", "0_2.png"), ("dsifn/1_1", "1_1.dat", "1_1.img", "1_1.png"),
        ("2_4", "before.dat", "after.png", "label.png")]
    before = open_raster(pairs[0].before, "before").ReadAsArray()
    np.testing.assert_array_equal(before, gdal.Open(str(sources[0] / "before.png")).ReadAsArray())


def test_a_data_sets_test_split_below_a_training_folder_is_warned_of(data_dir, tmp_path, caplog):
    """The LEVIR-CD download's root (train/, val/, test/) given as the training folder trained on its
    test split without a word, and the held-out figures a user then measures on it mean nothing."""
    from deepcl_core.training.trainer import _split

    levir = sorted((data_dir / "levir").iterdir())
    root = tmp_path / "LEVIR-CD"
    levir_layout(root / "train", levir[:2])
    levir_layout(root / "test", levir[2:4])
    with caplog.at_level(logging.WARNING):
        train, _ = _split(TrainOptions(data_dirs=[root], val_dirs=[levir[4]], out=tmp_path / "m.pt"))
    assert len(train) == 4
    said = [r.getMessage() for r in caplog.records if "test split" in r.getMessage()]
    assert said == [f"2 training pairs lie in {root / 'test'}, a data set's test split, which is for evaluating a "
                    f"model, not for training it: give the data set's other splits ({root / 'train'}) instead of "
                    f"{root}"]
    pair_in_test = tmp_path / "pairs" / "test" / levir[2].name  # the pair-folder layout
    shutil.copytree(levir[2], pair_in_test)
    for meant in (root / "test", pair_in_test):  # the test split, or a pair folder in it, given by name
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _split(TrainOptions(data_dirs=[meant], val_dirs=[levir[4]], out=tmp_path / "m.pt"))
        assert not [r for r in caplog.records if "test split" in r.getMessage()], meant
    # Only folders named as splits are offered (not .git/ or checkpoints/); none: no list
    shutil.rmtree(root / "train")
    (root / ".git").mkdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _split(TrainOptions(data_dirs=[root], val_dirs=[levir[4]], out=tmp_path / "m.pt"))
    assert [r.getMessage() for r in caplog.records if "test split" in r.getMessage()] == [
        f"2 training pairs lie in {root / 'test'}, a data set's test split, which is for evaluating a model, not for "
        f"training it: give the data set's other splits instead of {root}"]
