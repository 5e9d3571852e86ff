"""Paletted images (one band of colour-table indices, as PNG, GIF and older TIFF orthophotos often
are) are read as the colours QGIS draws: real pairs turned into palettes by GDAL's median-cut
quantiser, against the same colours written out as red, green and blue."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import InputError
from deepcl_core.normalization import NormalizationSpec
from deepcl_core.outputs import CHANGE_NODATA
from deepcl_core.training.pairs import PairFiles, load_pair

FAST = dict(tile_size=128, overlap=32, device="cpu", threshold=0.3)


def paletted(source: Path, target: Path, nodata_index: Optional[int] = None) -> Path:
    """``source``'s first three bands (stretched to 8 bits when wider) as one band of indices into
    a 256-colour table, dithered, on the same grid."""
    eight_bit = gdal.Translate("", str(source), format="MEM", bandList=[1, 2, 3], outputType=gdal.GDT_Byte,
                               scaleParams=[[]] if gdal.Open(str(source)).GetRasterBand(1).DataType != gdal.GDT_Byte
                               else None)
    red, green, blue = (eight_bit.GetRasterBand(b) for b in (1, 2, 3))
    table = gdal.ColorTable()
    assert gdal.ComputeMedianCutPCT(red, green, blue, 256, table) == 0
    out = gdal.GetDriverByName("GTiff").Create(str(target), eight_bit.RasterXSize, eight_bit.RasterYSize, 1,
                                               gdal.GDT_Byte)
    out.SetGeoTransform(eight_bit.GetGeoTransform())
    out.SetProjection(eight_bit.GetProjection())
    band = out.GetRasterBand(1)
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    assert gdal.DitherRGB2PCT(red, green, blue, band, table) == 0
    if nodata_index is not None:
        band.SetNoDataValue(nodata_index)
    out = None
    return target


def colours_written_out(source: Path, target: Path) -> Path:
    """The colours of a paletted image as a 3-band GeoTIFF, looked up here with numpy (not by GDAL's
    own expansion, which the engine uses)."""
    dataset = gdal.Open(str(source))
    table = dataset.GetRasterBand(1).GetColorTable()
    lookup = np.array([table.GetColorEntry(i)[:3] for i in range(table.GetCount())], np.uint8)
    rgb = np.moveaxis(lookup[dataset.ReadAsArray()], -1, 0)
    out = gdal.GetDriverByName("GTiff").Create(str(target), dataset.RasterXSize, dataset.RasterYSize, 3, gdal.GDT_Byte)
    out.SetGeoTransform(dataset.GetGeoTransform())
    out.SetProjection(dataset.GetProjection())
    for index in range(3):
        out.GetRasterBand(index + 1).WriteArray(rgb[index])
    out = None
    return target


def detect(before: Path, after: Path, folder: Path, model, **options) -> Tuple[np.ndarray, np.ndarray, object]:
    folder.mkdir()
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    result = detect_changes(before, after, outputs, DetectOptions(**{**FAST, **options}), model=model)
    return gdal.Open(str(outputs.change)).ReadAsArray(), gdal.Open(str(outputs.confidence)).ReadAsArray(), result


def test_a_paletted_pair_on_two_grids_is_detected_as_its_colours(oscd_mismatch_pair, tiny_model, tmp_path):
    """The OSCD crop whose after image lies on another grid: the after image's colours are put on
    the before grid, not its indices (resampled indices would be unrelated colours)."""
    before, after = (paletted(path, tmp_path / f"{path.stem}_palette.tif") for path in oscd_mismatch_pair)
    colours = [colours_written_out(path, tmp_path / f"{path.stem}_rgb.tif") for path in (before, after)]
    change, confidence, result = detect(before, after, tmp_path / "paletted", tiny_model)
    expected_change, expected_confidence, _ = detect(*colours, tmp_path / "colours", tiny_model)
    np.testing.assert_array_equal(confidence, expected_confidence)
    np.testing.assert_array_equal(change, expected_change)
    assert result.valid_pixels > 0.9 * change.size


def test_paletted_images_give_nearly_the_maps_of_the_original_colours(data_dir, tmp_path):
    """With the bundled model, on a LEVIR pair: 256 colours chosen by GDAL lose little, so the
    change maps agree almost everywhere with those of the original PNGs."""
    folder = data_dir / "levir" / "test_7_0256_0512"
    before = paletted(folder / "before.png", tmp_path / "before.tif")
    after = paletted(folder / "after.png", tmp_path / "after.tif")
    change, _, _ = detect(before, after, tmp_path / "paletted", None, tile_size=768, overlap=64, threshold=None)
    original, _, _ = detect(folder / "before.png", folder / "after.png", tmp_path / "original", None,
                            tile_size=768, overlap=64, threshold=None)
    assert 0.05 < original.mean() < 0.6  # the pair has change, and the model finds it
    assert (change == original).mean() > 0.95


def test_the_nodata_index_stays_nodata(levir_pair, tiny_model, tmp_path):
    """Pixels of the band's nodata index are no colour: nodata in the outputs, not black."""
    before = paletted(levir_pair[0], tmp_path / "before.tif")
    indices = gdal.Open(str(before)).ReadAsArray()
    commonest = int(np.bincount(indices.ravel()).argmax())
    dataset = gdal.Open(str(before), gdal.GA_Update)  # kept while its band is used
    dataset.GetRasterBand(1).SetNoDataValue(commonest)
    dataset = None
    change, confidence, result = detect(before, levir_pair[1], tmp_path / "out", tiny_model)
    hidden = indices == commonest
    assert hidden.sum() > 100
    assert (change[hidden] == CHANGE_NODATA).all() and (change[~hidden] != CHANGE_NODATA).all()
    assert result.valid_pixels == (~hidden).sum()


def test_chosen_bands_are_the_files_own(levir_pair, tiny_model, tmp_path):
    """Bands chosen by the user name the file's bands, as QGIS lists them: a paletted file has
    one, so bands 1, 2, 3 are refused in words rather than read from colours the user did not choose."""
    before = paletted(levir_pair[0], tmp_path / "before.tif")
    with pytest.raises(InputError, match="before image has bands 1 to 1; band 2 does not exist"):
        detect(before, levir_pair[1], tmp_path / "out", tiny_model, bands_before=[1, 2, 3])


def test_training_reads_a_paletted_pair_as_its_colours(data_dir, tmp_path):
    """``deepcl train`` and ``evaluate`` load pairs the same way detection reads them."""
    source = data_dir / "levir" / "test_7_0256_0512"
    as_palette, as_colours = tmp_path / "palette", tmp_path / "colours"
    for folder in (as_palette, as_colours):
        folder.mkdir()
        (folder / "label.png").symlink_to(source / "label.png")
    for name in ("before", "after"):
        paletted(source / f"{name}.png", as_palette / f"{name}.tif")
        colours_written_out(as_palette / f"{name}.tif", as_colours / f"{name}.tif")
    spec = NormalizationSpec()
    loaded = [load_pair(PairFiles(f.name, f / "before.tif", f / "after.tif", f / "label.png", "levir"),
                        ("red", "green", "blue"), spec) for f in (as_palette, as_colours)]
    np.testing.assert_array_equal(loaded[0].before, loaded[1].before)
    np.testing.assert_array_equal(loaded[0].after, loaded[1].after)
    np.testing.assert_array_equal(loaded[0].label, loaded[1].label)
