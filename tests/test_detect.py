"""Detection end to end on real pairs (issue 2 "Done when"): every output's grid, CRS, type,
nodata and value range; polygons with areas; the changed area; PNG without georeference; 16-bit
and float input; nodata; cancel and failure leave nothing behind; progress; overwriting.

The tiny fixture model is untrained, so these tests pin contracts, never accuracy."""
from __future__ import annotations

import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr, osr

from deepcl_core import detect, network_on_tiles
from deepcl_core.area_of_interest import AreaOfInterest
from deepcl_core.band_choice import choose_bands
from deepcl_core.detect import (KEEP_DECODED_BYTES, DetectOptions, DetectOutputs, _decoded_bytes, _keeps_decoded,
                                _open_pair, detect_changes)
from deepcl_core.errors import Cancelled, DeviceMemoryError, InputError, OutputError
from deepcl_core.model import inference
from deepcl_core.model_file import ModelBundle
from deepcl_core.outputs import CHANGE_NODATA, FLOAT_NODATA, RasterOutputs
from deepcl_core.raster_io import is_gdal_dataset_name, open_image, read_sample
from deepcl_core.tiling import RowBlender, TileGrid

from core_test_helpers import files_open_in_this_process, http_server, needs_proc, outputs_in

FAST = dict(tile_size=128, overlap=32, device="cpu")


@dataclass
class Raster:
    values: np.ndarray
    data_type: str
    nodata: Optional[float]
    geotransform: Optional[tuple]
    crs_wkt: str
    structure: Dict[str, str]
    block: list


def read_raster(path: Path) -> Raster:
    ds = gdal.Open(str(path))
    assert ds is not None and ds.RasterCount == 1
    band = ds.GetRasterBand(1)
    return Raster(band.ReadAsArray(), gdal.GetDataTypeName(band.DataType), band.GetNoDataValue(),
                  ds.GetGeoTransform(can_return_null=True), ds.GetProjection(),
                  ds.GetMetadata("IMAGE_STRUCTURE"), band.GetBlockSize())


def grid_of(path: Path):
    ds = gdal.Open(str(path))
    return ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(can_return_null=True), ds.GetProjection()


def same_crs(wkt_a: str, wkt_b: str) -> bool:
    a, b = osr.SpatialReference(wkt=wkt_a), osr.SpatialReference(wkt=wkt_b)
    return bool(a.IsSame(b))


def read_polygons(path: Path):
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    fields = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    features = [{name: feature.GetField(name) for name in fields} | {"geometry": feature.GetGeometryRef().Clone()}
                for feature in layer]
    return fields, features, layer.GetSpatialRef()


def assert_contract(outputs: DetectOutputs, before: Path, expect_crs: bool = True,
                    compression: str = "ZSTD") -> Dict[str, Raster]:
    """Every raster output lies exactly on the before grid, with the types, nodata and value ranges
    of the contract; returns them read."""
    width, height, geotransform, crs = grid_of(before)
    rasters = {}
    for name, path in (("change", outputs.change), ("confidence", outputs.confidence), ("distance", outputs.distance)):
        if path is None:
            continue
        raster = read_raster(path)
        assert raster.values.shape == (height, width), name
        if expect_crs:
            assert raster.geotransform == pytest.approx(geotransform, rel=1e-12), name
            assert same_crs(raster.crs_wkt, crs), name
        else:
            assert raster.crs_wkt == "" and raster.geotransform is None, name
        assert raster.structure.get("COMPRESSION") == compression, name
        assert raster.block == [256, 256], name  # tiled, whatever the image size
        rasters[name] = raster
    change = rasters["change"]
    assert change.data_type == "Byte" and change.nodata == CHANGE_NODATA
    assert set(np.unique(change.values)) <= {0, 1, CHANGE_NODATA}
    valid = change.values != CHANGE_NODATA
    for name, low, high in (("confidence", 0.0, 1.0), ("distance", 0.0, 2.0)):
        if name not in rasters:
            continue
        raster = rasters[name]
        assert raster.data_type == "Float32" and raster.nodata == FLOAT_NODATA, name
        np.testing.assert_array_equal(raster.values == FLOAT_NODATA, ~valid, err_msg=name)
        inside = raster.values[valid]
        assert np.isfinite(inside).all(), name
        assert inside.min() >= low and inside.max() <= high + 1e-5, name
    return rasters


# --- the real grid-mismatch case ---------------------------------------------------------------

def test_paths_may_be_plain_strings(levir_pair, tiny_model, tmp_path):
    """As in the README's Python example: str paths everywhere."""
    before, after = levir_pair
    result = detect_changes(str(before), str(after), DetectOutputs(change=str(tmp_path / "c.tif"),
                                                                   confidence=str(tmp_path / "f.tif")),
                            DetectOptions(**FAST), model=tiny_model)
    assert result.outputs.change == tmp_path / "c.tif" and (tmp_path / "f.tif").is_file()


@pytest.fixture(scope="module")
def oscd_run(oscd_mismatch_pair, tiny_model, tmp_path_factory):
    """Detection on the abudhabi crop, at a threshold low enough that about 15 % of the pixels
    change (the untrained model's probabilities sit in a narrow band)."""
    before, after = oscd_mismatch_pair
    probe = outputs_in(tmp_path_factory.mktemp("probe"), distance=False)
    detect_changes(before, after, probe, DetectOptions(**FAST), model=tiny_model)
    confidence = read_raster(probe.confidence).values
    threshold = float(np.percentile(confidence[confidence != FLOAT_NODATA], 85))
    outputs = outputs_in(tmp_path_factory.mktemp("oscd"), polygons=True)
    result = detect_changes(before, after, outputs, DetectOptions(threshold=threshold, **FAST), model=tiny_model)
    return before, after, outputs, result, threshold


def test_the_pair_really_has_two_grids(oscd_mismatch_pair):
    before, after = oscd_mismatch_pair
    assert grid_of(before)[:3] != grid_of(after)[:3]


def test_outputs_lie_on_the_before_grid_with_their_contract(oscd_run):
    before, _, outputs, result, threshold = oscd_run
    rasters = assert_contract(outputs, before)
    change = rasters["change"].values
    assert (change == CHANGE_NODATA).sum() == 0  # the after crop covers the before crop entirely
    assert result.valid_pixels == change.size
    assert result.changed_pixels == (change == 1).sum()
    assert 0.05 * change.size < result.changed_pixels < 0.3 * change.size
    confidence = rasters["confidence"].values
    np.testing.assert_array_equal(change == 1, confidence >= threshold)
    assert result.threshold == threshold
    assert result.warnings and "never trained" in result.warnings[0]


@pytest.mark.parametrize("coarsened", [None, "after", "before"])
def test_pixels_of_very_different_sizes_are_warned_of(oscd_mismatch_pair, tiny_model, tmp_path, coarsened):
    """The OSCD crop's two grids differ a little (no warning); one image warped to pixels 4 times
    as large (40 m, as a 30 m Landsat or a coarse mosaic beside Sentinel-2) gets a warning naming it."""
    images = dict(zip(("before", "after"), oscd_mismatch_pair))
    if coarsened:
        source = gdal.Open(str(images[coarsened]))
        _, dx, _, _, _, dy = source.GetGeoTransform()
        images[coarsened] = tmp_path / f"{coarsened}_coarse.tif"
        gdal.Warp(str(images[coarsened]), source, xRes=4 * dx, yRes=-4 * dy, resampleAlg="average")
    result = detect_changes(images["before"], images["after"], outputs_in(tmp_path / "out", distance=False),
                            DetectOptions(**FAST), model=tiny_model)
    resolution = [warning for warning in result.warnings if "pixels are" in warning]
    if coarsened is None:
        assert resolution == []
    else:
        assert len(resolution) == 1 and resolution[0].startswith(f"the {coarsened} image's pixels are 4.0 times")


@pytest.mark.parametrize("metres", [15, 30])
def test_pixels_as_large_as_the_bound_are_warned_of_as_the_warning_says(data_dir, tiny_model, tmp_path, metres):
    """A 15 m or 30 m image (Landsat) beside a 10 m one in UTM: their pixels measured on the ground are
    a hair under 1.5 or 3 times as large. Warned of from 1.5 times on, as the warning shows the ratio:
    compared unrounded, 15 m beside 10 m would go without the warning (30 m did, when it began at 3)."""
    from deepcl_core.area import ground_pixel_size
    from deepcl_core.grid import Grid

    images = {}
    for role, size in (("before", 10), ("after", metres)):
        images[role] = tmp_path / f"{role}.tif"
        gdal.Warp(str(images[role]), str(data_dir / "oscd" / "bercy" / f"{role}.tif"), dstSRS="EPSG:32631",
                  xRes=size, yRes=size, outputBounds=(453100, 5408000, 455800, 5412500), resampleAlg="average")
    before_m, after_m = (ground_pixel_size(Grid.of(gdal.Open(str(images[role])))) for role in ("before", "after"))
    assert metres / 10 - 1e-4 < after_m / before_m < metres / 10  # the case: as measured, under 1.5 or 3
    result = detect_changes(images["before"], images["after"], outputs_in(tmp_path / "out", distance=False),
                            DetectOptions(**FAST), model=tiny_model)
    assert [w for w in result.warnings if "pixels are" in w][0].startswith(
        f"the after image's pixels are {metres / 10:.1f} times as large as the before image's ({metres} m against "
        "10 m)")


def test_changed_area_is_reported_in_square_metres(oscd_run):
    _, _, _, result, _ = oscd_run
    # Sentinel-2 pixels: about 9.5 m × 10.4 m at 24° N in this EPSG:4326 grid.
    assert 90 < result.changed_area_m2 / result.changed_pixels < 110
    assert 90 < result.valid_area_m2 / result.valid_pixels < 110
    assert result.changed_percent == pytest.approx(100 * result.changed_pixels / result.valid_pixels)


def test_polygons_carry_area_and_confidence(oscd_run):
    before, _, outputs, result, threshold = oscd_run
    fields, features, srs = read_polygons(outputs.polygons)
    assert {"area_m2", "confidence"} <= set(fields)
    assert len(features) == result.polygons > 0
    assert same_crs(srs.ExportToWkt(), grid_of(before)[3])
    # Polygons are exactly the changed pixels: their areas add up to the reported changed area.
    assert sum(f["area_m2"] for f in features) == pytest.approx(result.changed_area_m2, rel=1e-3)
    for feature in features:
        assert feature["area_m2"] > 0
        assert threshold - 1e-6 <= feature["confidence"] <= 1.0  # the mean over changed pixels


def test_min_area_drops_small_polygons(oscd_run, tiny_model, tmp_path):
    before, after, outputs, result, threshold = oscd_run
    _, all_features, _ = read_polygons(outputs.polygons)
    areas = sorted(f["area_m2"] for f in all_features)
    min_area = areas[len(areas) // 2] + 1.0  # more than half of them are smaller
    filtered = outputs_in(tmp_path, distance=False, polygons=True)
    kept = detect_changes(before, after, filtered, DetectOptions(threshold=threshold, min_area=min_area, **FAST),
                          model=tiny_model)
    _, features, _ = read_polygons(filtered.polygons)
    assert len(features) == kept.polygons == sum(a >= min_area for a in areas)
    assert 0 < len(features) < len(all_features)
    assert all(f["area_m2"] >= min_area for f in features)
    # The filter thins the polygons only: the change raster is unchanged.
    np.testing.assert_array_equal(read_raster(filtered.change).values, read_raster(outputs.change).values)


def test_after_image_partly_outside_gives_nodata_there(data_dir, tiny_model, tmp_path):
    """The after image covers only the east part of the before image: the rest is nodata."""
    city = data_dir / "oscd" / "abudhabi"
    before = tmp_path / "before.tif"
    gdal.Translate(str(before), str(city / "before.tif"), srcWin=[100, 120, 192, 160])
    x0, dx, _, y0, _, dy = gdal.Open(str(before)).GetGeoTransform()
    after = tmp_path / "after.tif"
    gdal.Translate(str(after), str(city / "after.tif"),
                   projWin=[x0 + 96 * dx, y0 - 10 * dy, x0 + 220 * dx, y0 + 180 * dy])
    outputs = outputs_in(tmp_path / "out")
    result = detect_changes(before, after, outputs, DetectOptions(**FAST), model=tiny_model)
    change = assert_contract(outputs, before)["change"].values
    assert (change[:, :90] == CHANGE_NODATA).all()
    assert (change[:, 100:] != CHANGE_NODATA).all()
    assert result.valid_pixels == (change != CHANGE_NODATA).sum()


# --- other inputs ------------------------------------------------------------------------------

def test_png_pair_without_georeference(levir_pair, tiny_model, tmp_path):
    before, after = levir_pair
    outputs = outputs_in(tmp_path, polygons=True)
    probe = detect_changes(before, after, outputs_in(tmp_path / "probe", distance=False), DetectOptions(**FAST),
                           model=tiny_model)
    confidence = read_raster(probe.outputs.confidence).values
    threshold = float(np.percentile(confidence, 90))
    result = detect_changes(before, after, outputs,
                            DetectOptions(threshold=threshold, min_area=4, **FAST), model=tiny_model)
    rasters = assert_contract(outputs, before, expect_crs=False)
    assert rasters["change"].values.shape == (256, 256)
    assert result.changed_area_m2 is None and result.valid_area_m2 is None
    assert result.changed_pixels > 0
    fields, features, srs = read_polygons(outputs.polygons)
    assert features
    assert srs is None or srs.GetName().startswith("Undefined")  # GeoPackage's "undefined" SRS
    assert all(f["area_px"] >= 4 for f in features)  # min_area in pixels without a CRS
    # In pixel units with y running from 0 down to -256, where QGIS draws the image.
    envelopes = [f["geometry"].GetEnvelope() for f in features]
    assert all(0 <= x0 <= x1 <= 256 and -256 <= y0 <= y1 <= 0 for x0, x1, y0, y1 in envelopes)
    # Each polygon's mean confidence is read from under it: changed pixels only, so at least the threshold.
    assert all(f["confidence"] >= threshold - 1e-6 for f in features)


@pytest.fixture(scope="module")
def same_grid_pair(oscd_mismatch_pair, tmp_path_factory):
    """The abudhabi crop with its after image resampled onto the before grid (UInt16)."""
    before, after = oscd_mismatch_pair
    width, height, (x0, dx, _, y0, _, dy), _ = grid_of(before)
    folder = tmp_path_factory.mktemp("same_grid")
    aligned = folder / "after.tif"
    gdal.Warp(str(aligned), str(after), outputBounds=(x0, y0 + dy * height, x0 + dx * width, y0),
              width=width, height=height, resampleAlg="bilinear")
    return before, aligned


def as_reflectance(source: Path, target: Path, nan_block=None) -> Path:
    """A Float32 copy with values / 10000 (reflectance), optionally with NaN in a block."""
    gdal.Translate(str(target), str(source), outputType=gdal.GDT_Float32, scaleParams=[[0, 10000, 0, 1]])
    if nan_block is not None:
        ds = gdal.Open(str(target), gdal.GA_Update)
        (r0, r1), (c0, c1) = nan_block
        for index in range(1, ds.RasterCount + 1):
            band = ds.GetRasterBand(index)
            values = band.ReadAsArray()
            values[r0:r1, c0:c1] = np.nan
            band.WriteArray(values)
        ds = None
    return target


def test_nodata_of_float32s_lowest_value_is_set_aside_without_a_numpy_warning(same_grid_pair, tiny_model,
                                                                                tmp_path):
    """numpy's "overflow encountered in multiply" reached stderr (QGIS's too): the nodata pixels
    were stretched with the rest before being set to 0."""
    import warnings

    before, after = same_grid_pair
    lowest = float(np.finfo(np.float32).min)
    image = as_reflectance(after, tmp_path / "after.tif")
    ds = gdal.Open(str(image), gdal.GA_Update)
    for index in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(index)
        values = band.ReadAsArray()
        values[40:60, 50:120] = lowest
        band.WriteArray(values)
        band.SetNoDataValue(lowest)
    ds = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = detect_changes(before, image, outputs_in(tmp_path / "out"), DetectOptions(**FAST), model=tiny_model)
    assert result.valid_pixels == 192 * 160 - 20 * 70


def test_float_reflectance_gives_the_same_result_as_16_bit(same_grid_pair, tiny_model, tmp_path):
    """Normalisation stretches each image by its own percentiles: Sentinel-2 digital numbers
    (UInt16) and the same data as Float32 reflectance give the same change map."""
    before, after = same_grid_pair
    assert gdal.GetDataTypeName(gdal.Open(str(before)).GetRasterBand(1).DataType) == "UInt16"
    digital = outputs_in(tmp_path / "uint16")
    detect_changes(before, after, digital, DetectOptions(**FAST), model=tiny_model)
    fb, fa = as_reflectance(before, tmp_path / "b.tif"), as_reflectance(after, tmp_path / "a.tif")
    reflectance = outputs_in(tmp_path / "float32")
    detect_changes(fb, fa, reflectance, DetectOptions(**FAST), model=tiny_model)
    first, second = assert_contract(digital, before), assert_contract(reflectance, fb)
    np.testing.assert_allclose(second["confidence"].values, first["confidence"].values, atol=1e-4)
    np.testing.assert_allclose(second["distance"].values, first["distance"].values, atol=1e-4)


def test_nodata_in_either_input_is_nodata_in_every_output(same_grid_pair, tiny_model, tmp_path):
    before, after = same_grid_pair
    # Before: UInt16 with nodata 0 in rows 20-50; after: Float32 with NaN in columns 120-150.
    masked_before = tmp_path / "before.tif"
    gdal.Translate(str(masked_before), str(before), noData=0)
    ds = gdal.Open(str(masked_before), gdal.GA_Update)
    for index in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(index)
        values = band.ReadAsArray()
        values[20:50, :] = 0
        band.WriteArray(values)
    ds = None
    masked_after = as_reflectance(after, tmp_path / "after.tif", nan_block=((0, 160), (120, 150)))
    outputs = outputs_in(tmp_path / "out", polygons=True)
    result = detect_changes(masked_before, masked_after, outputs, DetectOptions(threshold=0.3, **FAST),
                            model=tiny_model)
    rasters = assert_contract(outputs, before)
    expected_nodata = np.zeros((160, 192), bool)
    expected_nodata[20:50, :] = True
    expected_nodata[:, 120:150] = True
    np.testing.assert_array_equal(rasters["change"].values == CHANGE_NODATA, expected_nodata)
    assert result.valid_pixels == (~expected_nodata).sum()
    # Nodata never becomes a change polygon, even when everything valid is "changed".
    assert result.changed_pixels == result.valid_pixels
    _, features, _ = read_polygons(outputs.polygons)
    assert sum(f["area_m2"] for f in features) == pytest.approx(result.valid_area_m2, rel=1e-3)


def _stored_south_up(image: Path, path: Path) -> Path:
    """``image``'s pixels stored bottom row first, under a geotransform of positive pixel height."""
    source = gdal.Open(str(image))
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    stored = gdal.GetDriverByName("GTiff").CreateCopy(str(path), source)
    stored.SetGeoTransform([x0, dx, 0.0, y0 + dy * source.RasterYSize, 0.0, -dy])
    stored.WriteRaster(0, 0, source.RasterXSize, source.RasterYSize, source.ReadAsArray()[:, ::-1].tobytes())
    return path


def test_a_before_image_stored_south_up_is_refused_where_the_after_image_must_be_warped(oscd_mismatch_pair,
                                                                                         tiny_model, tmp_path):
    """GDAL warps onto north-up grids: the after image came upside down against the before image's
    rows, and 68 % of a real pair read as changed. Two south-up images on one grid need no warp."""
    before, after = oscd_mismatch_pair
    south_up = _stored_south_up(before, tmp_path / "before.tif")
    with pytest.raises(InputError, match=r"the after image cannot be put on the before image's grid, which is "
                                         r"stored south-up .*; warp the before image to a north-up grid first"):
        detect_changes(south_up, after, outputs_in(tmp_path / "warped"), DetectOptions(**FAST), model=tiny_model)
    assert not list((tmp_path / "warped").iterdir())
    both = outputs_in(tmp_path / "both")
    result = detect_changes(south_up, south_up, both, DetectOptions(**FAST), model=tiny_model)
    assert result.valid_pixels == 192 * 160 and grid_of(both.change) == grid_of(south_up)


def test_an_image_with_a_crs_but_no_geotransform_is_refused_where_it_must_be_aligned(oscd_mismatch_pair, tiny_model,
                                                                                      tmp_path):
    """GDAL places such an image at (0, 0), one unit a pixel: the after image was warped onto that
    (or, today, the before image was said to be "stored south-up (1 × 1)")."""
    before, after = oscd_mismatch_pair
    source = gdal.Open(str(before))
    unplaced = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "before.tif"), source.RasterXSize,
                                                    source.RasterYSize, source.RasterCount, gdal.GDT_UInt16)
    unplaced.SetProjection(source.GetProjection())
    unplaced.WriteArray(source.ReadAsArray())
    unplaced = None
    with pytest.raises(InputError, match="^the before image has a CRS but no geotransform, and the images' grids "
                                         "differ: nothing places its pixels on the ground; georeference it"):
        detect_changes(tmp_path / "before.tif", after, outputs_in(tmp_path / "out"), DetectOptions(**FAST),
                       model=tiny_model)


def _with_a_strip_of_nodata(image: Path, path: Path, bands: List[int]) -> Path:
    """``image`` with nodata 0 declared on every band and ``bands`` 0 in its top 40 rows."""
    gdal.Translate(str(path), str(image), noData=0)
    ds = gdal.Open(str(path), gdal.GA_Update)
    for index in bands:
        values = ds.GetRasterBand(index).ReadAsArray()
        values[:40] = 0
        ds.GetRasterBand(index).WriteArray(values)
    return path


@pytest.mark.parametrize("warped", ["after", "before"])
def test_a_pixel_one_band_lacks_is_no_data_also_where_an_image_is_warped(oscd_mismatch_pair, tiny_model, tmp_path,
                                                                          warped):
    """The after image on another grid, or the before image cut by a mask, is warped, and the
    warper's alpha marked only pixels that every band lacked: a strip where one band is nodata was
    read as ground of value 0 (the band's nodata), and skewed the image's stretch too. On the
    image's own grid such a pixel was no data, as it is now in both."""
    from test_area_of_interest import pixel_edges, write_mask

    before, after = oscd_mismatch_pair
    area = None
    if warped == "before":
        box = [pixel_edges(before, column, row) for column, row in ((4, 4), (188, 4), (188, 156), (4, 156))]
        area = AreaOfInterest(mask=str(write_mask(tmp_path / "mask.gpkg", box)))
    validity = {}
    for strip in ("one band", "all bands"):
        image = _with_a_strip_of_nodata(before if warped == "before" else after, tmp_path / f"{strip}.tif",
                                        [1] if strip == "one band" else [1, 2, 3, 4])
        pair = (image, after) if warped == "before" else (before, image)
        outputs = outputs_in(tmp_path / strip)
        result = detect_changes(*pair, outputs, DetectOptions(area=area, **FAST), model=tiny_model)
        validity[strip] = read_raster(outputs.change).values != CHANGE_NODATA
        assert result.valid_pixels == validity[strip].sum()
    # The same pixels are no data, but for one row at the strip's edge, which bilinear resampling
    # fills from the valid row beside it in the band that lacks it (all bands lacking it, it is no data)
    rows_that_differ = set(np.argwhere(validity["one band"] != validity["all bands"])[:, 0])
    assert len(rows_that_differ) <= 1, rows_that_differ
    assert validity["one band"][:30].sum() == 0 < validity["one band"][40:60].sum()


@pytest.mark.parametrize("fill, as_stored", [(-9999, as_reflectance), (0, None)], ids=["reflectance_-9999", "uint16_0"])
def test_fill_not_declared_nodata_is_warned_of(same_grid_pair, tiny_model, tmp_path, fill, as_stored):
    """A strip of fill without a nodata value (-9999 in reflectance, a black collar of 0 in the
    UInt16 image): taken as ground it stretches the image and reads as change; the run says so,
    and says nothing once the nodata value is declared."""
    before, after = (as_stored(path, tmp_path / path.name) if as_stored else path for path in same_grid_pair)
    filled = tmp_path / "filled.tif"
    gdal.Translate(str(filled), str(after))
    dataset = gdal.Open(str(filled), gdal.GA_Update)
    for index in range(1, dataset.RasterCount + 1):
        values = dataset.GetRasterBand(index).ReadAsArray()
        values[:, :40] = fill
        dataset.GetRasterBand(index).WriteArray(values)
    dataset = None
    result = detect_changes(before, filled, outputs_in(tmp_path / "out"), DetectOptions(**FAST), model=tiny_model)
    assert [w for w in result.warnings if "in every band" in w] == [
        f"21% of the after image's sampled pixels are {fill} in every band, which the image does not declare as "
        f"nodata: if that is fill, declare it (gdal_edit.py -a_nodata {fill} FILE, or the layer's Transparency ▸ "
        "No data value in QGIS) and run again"]
    gdal.Translate(str(tmp_path / "declared.tif"), str(filled), noData=fill)
    result = detect_changes(before, tmp_path / "declared.tif", outputs_in(tmp_path / "declared"),
                            DetectOptions(**FAST), model=tiny_model)
    assert not [w for w in result.warnings if "in every band" in w]


def test_eight_bit_input_with_chosen_bands(same_grid_pair, tiny_model, tmp_path):
    before, after = same_grid_pair
    paths = []
    for source, name in ((before, "b8.tif"), (after, "a8.tif")):
        target = tmp_path / name
        gdal.Translate(str(target), str(source), outputType=gdal.GDT_Byte, scaleParams=[[0, 3000, 0, 255]])
        paths.append(target)
    outputs = outputs_in(tmp_path / "out")
    result = detect_changes(*paths, outputs, DetectOptions(bands_before=[3, 2, 1], bands_after=[3, 2, 4], **FAST),
                            model=tiny_model)
    assert_contract(outputs, before)
    assert result.valid_pixels == 160 * 192


def _without_band_names(source: Path, target: Path, bands: List[int]) -> Path:
    """``bands`` of ``source`` with neither descriptions nor colour interpretations."""
    original = gdal.Open(str(source))
    dataset = gdal.GetDriverByName("GTiff").Create(str(target), original.RasterXSize, original.RasterYSize,
                                                   len(bands), original.GetRasterBand(1).DataType)
    dataset.SetGeoTransform(original.GetGeoTransform())
    dataset.SetProjection(original.GetProjection())
    for index, band in enumerate(bands, start=1):
        dataset.GetRasterBand(index).WriteArray(original.GetRasterBand(band).ReadAsArray())
    return target


def test_no_image_of_the_real_data_is_taken_for_undeclared_fill_or_saturated(data_dir):
    """0 joined the fill values: the darkest shadows of aerial images must stay under the share
    that is warned of, in every before and after image of ../shared/data; and so must the brightest
    roofs under the share of saturated pixels that is warned of."""
    from deepcl_core.detect import _saturation_warning, _undeclared_fill

    images = sorted(p for p in data_dir.glob("*/*/*") if p.stem in ("before", "after") and p.suffix != ".xml")
    assert len(images) > 40
    for path in images:
        dataset = open_image(str(path), "image")
        bands = choose_bands(dataset, None, ("red", "green", "blue"), "image")
        sample, valid = read_sample(dataset, bands, "image")
        assert _undeclared_fill(sample, valid, "image") is None, path
        assert _saturation_warning(dataset, bands, sample, valid, "image") is None, path


def test_more_bands_than_the_models_none_named_are_warned_of(same_grid_pair, tiny_model, tmp_path):
    """Blue, green, red, near infrared without names (a PlanetScope-like file) are read as red,
    green, blue from the first three: the run says it guessed; not when the bands are chosen, nor
    for an unnamed image of just three bands, nor for the named OSCD bands."""
    before, after = same_grid_pair
    bgrn = [_without_band_names(path, tmp_path / f"bgrn_{path.name}", [3, 2, 1, 4]) for path in (before, after)]
    result = detect_changes(*bgrn, outputs_in(tmp_path / "guessed"), DetectOptions(**FAST), model=tiny_model)
    assert [w for w in result.warnings if "bands do not say" in w] == [
        f"the {role} image's 4 bands do not say which is red, green or blue (no description or colour "
        "interpretation): bands 1, 2, 3 were taken as red, green, blue; if they are in another order, choose the "
        "bands by hand, or name them in the files, e.g. gdal_edit.py -colorinterp_3 red -colorinterp_2 green "
        "-colorinterp_1 blue FILE for blue, green, red" for role in ("before", "after")]
    chosen = DetectOptions(bands_before=[3, 2, 1], bands_after=[3, 2, 1], **FAST)
    three = [_without_band_names(path, tmp_path / f"rgb_{path.name}", [1, 2, 3]) for path in (before, after)]
    from test_area_of_interest import write_mask

    x0, dx, _, y0, _, dy = gdal.Open(str(before)).GetGeoTransform()
    x1, y1 = x0 + 100 * dx, y0 + 100 * dy
    mask = write_mask(tmp_path / "mask.gpkg", [(x0 + 20 * dx, y0 + 20 * dy), (x1, y0 + 20 * dy), (x1, y1),
                                               (x0 + 20 * dx, y1)], epsg=4326)
    masked = DetectOptions(area=AreaOfInterest(mask=str(mask)), **FAST)  # the mask's warp drops the band names
    for pair, options, name in ((bgrn, chosen, "chosen"), (three, DetectOptions(**FAST), "three"),
                                ((before, after), DetectOptions(**FAST), "named"), ((before, after), masked, "masked")):
        result = detect_changes(*pair, outputs_in(tmp_path / name), options, model=tiny_model)
        assert not [w for w in result.warnings if "bands do not say" in w], name


def test_one_georeferenced_image_and_one_not_is_an_input_error(oscd_mismatch_pair, levir_pair, tiny_model,
                                                                tmp_path):
    with pytest.raises(InputError, match="georeferenced"):
        detect_changes(oscd_mismatch_pair[0], levir_pair[1], outputs_in(tmp_path), DetectOptions(**FAST),
                       model=tiny_model)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_extent", [False, True])
def test_a_rotated_before_image_is_refused_in_words(oscd_mismatch_pair, tiny_model, tmp_path, with_extent):
    """The OSCD crop given rotation terms in its geotransform: refused with advice, whether the
    whole image is detected or an extent is cut from it (the outputs lie on its rows and columns)."""
    rotated = tmp_path / "rotated.tif"
    gdal.Translate(str(rotated), str(oscd_mismatch_pair[0]))
    dataset = gdal.Open(str(rotated), gdal.GA_Update)
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    dataset.SetGeoTransform((x0, dx, dx * 0.1, y0, dy * 0.1, dy))
    dataset = None
    area = AreaOfInterest(extent=(x0, y0 + 100 * dy, x0 + 100 * dx, y0)) if with_extent else None
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="rotated .* warp it to a north-up grid"):
        detect_changes(rotated, oscd_mismatch_pair[1], outputs_in(out), DetectOptions(area=area, **FAST),
                       model=tiny_model)
    assert list(out.iterdir()) == []


def test_bands_are_found_by_description(write_raster):
    """Sentinel-2 style band names in another order: red, green, blue are found by name."""
    path = write_raster("s2.tif", np.zeros((4, 8, 8), np.uint16))
    ds = gdal.Open(str(path), gdal.GA_Update)
    for index, name in enumerate(["NIR (B08)", "Blue (B02)", "Green (B03)", "Red (B04)"], start=1):
        ds.GetRasterBand(index).SetDescription(name)
    assert choose_bands(ds, None, ("red", "green", "blue"), "before") == (4, 3, 2)
    plain = gdal.Open(str(write_raster("plain.tif", np.zeros((5, 8, 8), np.uint8))))
    assert choose_bands(plain, None, ("red", "green", "blue"), "before") == (1, 2, 3)


def test_an_image_whose_bands_are_named_without_the_models_is_refused(oscd_mismatch_pair, tiny_model, tmp_path):
    """A false-colour composite (NIR, red, green, as gdal_translate -b 4 -b 1 -b 2 leaves OSCD's band
    names) lacks blue: taking its first three bands as red, green, blue would be a silent guess. The
    refusal names its bands; bands chosen by hand are used."""
    before, after = oscd_mismatch_pair
    composite = tmp_path / "nir_red_green.tif"
    gdal.Translate(str(composite), str(before), bandList=[4, 1, 2])
    with pytest.raises(InputError, match=r"before image's bands are B08, B04, B03, without blue"):
        detect_changes(composite, after, outputs_in(tmp_path / "refused"), DetectOptions(**FAST), model=tiny_model)
    assert not list((tmp_path / "refused").iterdir())
    chosen = outputs_in(tmp_path / "chosen", distance=False)
    detect_changes(composite, after, chosen, DetectOptions(bands_before=(2, 3, 1), **FAST), model=tiny_model)
    assert read_raster(chosen.change).values.shape == (160, 192)


# --- the run itself: progress, cancel, failure, overwrite ------------------------------------------

def test_progress_fractions_increase_to_one(oscd_mismatch_pair, tiny_model, tmp_path):
    calls = []
    detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path, polygons=True), DetectOptions(tile_size=64, overlap=16,
                   batch_size=2, device="cpu"), progress=lambda f, m: calls.append((f, m)), model=tiny_model)
    fractions = [f for f, _ in calls]
    assert len(fractions) > 5
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(isinstance(m, str) for _, m in calls)


def cancel_after(calls: int):
    count = {"n": 0}

    def cancel() -> bool:
        count["n"] += 1
        return count["n"] > calls

    return cancel, count


# In turn with the network on one thread or two (the CPU's way); in background threads (as beside a GPU).
@pytest.mark.parametrize("io_threads, overlap_io", [(1, False), (2, False), (4, True)])
@pytest.mark.parametrize("calls", [0, 1, 3])
def test_cancelled_run_leaves_no_file(oscd_mismatch_pair, tiny_model, tmp_path, calls, io_threads, overlap_io):
    out = tmp_path / "out"
    cancel, count = cancel_after(calls)
    with pytest.raises(Cancelled):
        detect_changes(*oscd_mismatch_pair, outputs_in(out, polygons=True),
                       DetectOptions(tile_size=64, overlap=16, batch_size=2, device="cpu", io_threads=io_threads,
                                     overlap_io=overlap_io),
                       cancel=cancel, model=tiny_model)
    assert count["n"] == calls + 1  # stopped at the first true answer
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def sztaki_pair(data_dir: Path) -> Tuple[Path, Path]:
    """952×640 aerial PNGs: large enough for one level of overviews (476×320)."""
    folder = data_dir / "sztaki" / "szada_1"
    return folder / "before.png", folder / "after.png"


def test_overviews_on_request_hold_each_maps_values(sztaki_pair, tiny_model, tmp_path):
    """The change map's overview keeps its classes; the confidence's is the mean of 2×2 pixels;
    the full-resolution maps are those of a run without overviews."""
    plain, with_overviews = outputs_in(tmp_path / "plain"), outputs_in(tmp_path / "overviews")
    detect_changes(*sztaki_pair, plain, DetectOptions(**FAST), model=tiny_model)
    detect_changes(*sztaki_pair, with_overviews, DetectOptions(overviews=True, **FAST), model=tiny_model)
    for name in ("change", "confidence", "distance"):
        np.testing.assert_array_equal(read_raster(getattr(with_overviews, name)).values,
                                      read_raster(getattr(plain, name)).values)
        assert gdal.Open(str(getattr(plain, name))).GetRasterBand(1).GetOverviewCount() == 0
    change_file, confidence_file = (gdal.Open(str(path)) for path in (with_overviews.change, with_overviews.confidence))
    change, confidence = (dataset.GetRasterBand(1) for dataset in (change_file, confidence_file))
    assert change.GetOverviewCount() == confidence.GetOverviewCount() == 1
    assert (change.GetOverview(0).XSize, change.GetOverview(0).YSize) == (476, 320)
    assert set(np.unique(change.GetOverview(0).ReadAsArray())) <= {0, 1}
    full = confidence.ReadAsArray().astype(np.float64)
    np.testing.assert_allclose(confidence.GetOverview(0).ReadAsArray(),
                               full.reshape(320, 2, 476, 2).mean(axis=(1, 3)), atol=1e-6)


def test_cancel_while_building_overviews_leaves_no_file(sztaki_pair, tiny_model, tmp_path):
    """GDAL polls the cancel callable as it builds them and stops at its first true answer."""
    messages, polls = [], []

    def cancel_at_overviews() -> bool:
        if messages[-1] == "building overviews":
            polls.append(True)
        return bool(polls)
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        detect_changes(*sztaki_pair, outputs_in(out), DetectOptions(overviews=True, **FAST),
                       progress=lambda fraction, message: messages.append(message), cancel=cancel_at_overviews,
                       model=tiny_model)
    assert messages[-1] == "building overviews" and list(out.iterdir()) == []
    assert len(polls) == 2  # GDAL's poll, answered true, and the check after it stopped


def test_cancel_while_polygonising_leaves_no_file(oscd_run, tiny_model, tmp_path):
    before, after, _, _, threshold = oscd_run
    messages = []
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        detect_changes(before, after, outputs_in(out, polygons=True), DetectOptions(threshold=threshold, **FAST),
                       progress=lambda fraction, message: messages.append(message),
                       cancel=lambda: "polygon" in messages[-1], model=tiny_model)
    assert "polygon" in messages[-1]  # the rasters were complete; polygons were being written
    assert list(out.iterdir()) == []


class FailingNetwork(torch.nn.Module):
    """Works for one batch, then fails as a GPU running out of memory would."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls = 0

    def forward(self, before, after):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("simulated failure in the middle of the run")
        return self.network(before, after)


def test_failed_run_leaves_no_file(oscd_mismatch_pair, tiny_model, tmp_path):
    failing = tiny_model.__class__(**tiny_model.__dict__)
    failing.build = lambda: FailingNetwork(tiny_model.build())
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        detect_changes(*oscd_mismatch_pair, outputs_in(out, polygons=True),
                       DetectOptions(tile_size=64, overlap=16, batch_size=2, device="cpu"), model=failing)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("overlap_io", [False, True])
def test_a_write_that_fails_fails_the_run_and_leaves_no_file(oscd_mismatch_pair, tiny_model, tmp_path, monkeypatch,
                                                            overlap_io):
    """In turn with the network, and from the thread that writes behind the blending thread: the
    error reaches the caller as it was, no later row is written, and no file is left."""
    write_now = RasterOutputs._write_now
    calls = []

    def disk_full_at_the_second_band(self, path, rows, y):
        calls.append(y)
        if len(calls) > 1:
            raise OutputError(f"writing {path} failed: No space left on device (is the disk full?)")
        write_now(self, path, rows, y)
    monkeypatch.setattr(RasterOutputs, "_write_now", disk_full_at_the_second_band)
    out = tmp_path / "out"
    options = DetectOptions(tile_size=32, overlap=8, batch_size=2, device="cpu", io_threads=2, overlap_io=overlap_io)
    with pytest.raises(OutputError, match="No space left"):
        detect_changes(*oscd_mismatch_pair, outputs_in(out), options, model=tiny_model)
    assert len(calls) == 2 and list(out.iterdir()) == []


@pytest.mark.parametrize("overlap_io", [False, True])
def test_device_out_of_memory_while_blending_is_explained_and_leaves_no_file(oscd_mismatch_pair, tiny_model, tmp_path,
                                                                            monkeypatch, overlap_io):
    """Past the network (whose batches shrink instead), running out of GPU memory, as blending on
    a GPU another program fills would, ends the run with a DeviceMemoryError that says what to do."""
    add = RowBlender.add
    calls = []

    def out_of_memory_at_the_third_tile(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total "
                                              "capacity of 79.19 GiB of which 3.06 MiB is free. If reserved but "
                                              "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF")
        add(self, *args, **kwargs)
    monkeypatch.setattr(RowBlender, "add", out_of_memory_at_the_third_tile)
    out = tmp_path / "out"
    options = DetectOptions(tile_size=64, overlap=16, batch_size=2, device="cpu", io_threads=2, overlap_io=overlap_io)
    with pytest.raises(DeviceMemoryError) as caught:
        detect_changes(*oscd_mismatch_pair, outputs_in(out, polygons=True), options, model=tiny_model)
    assert str(caught.value) == ("the cpu device ran out of memory while blending or writing the tiles (CUDA out of "
                                 "memory. Tried to allocate 20.00 MiB); close other programs using it, or run on "
                                 "the CPU (--device cpu)")
    assert len(calls) == 3 and list(out.iterdir()) == []


@needs_proc
@pytest.mark.parametrize("failure", ["cancelled", "network error"])
def test_a_failed_run_leaves_no_input_open(oscd_mismatch_pair, tiny_model, tmp_path, failure):
    """Whoever keeps the exception (QGIS keeps a failed Processing run's) must not keep the input
    files open through the frames of its traceback."""
    inputs = [tmp_path / name for name in ("before.tif", "after.tif")]
    for source, target in zip(oscd_mismatch_pair, inputs):
        target.write_bytes(source.read_bytes())  # files no other test has open
    model, cancel = tiny_model, None
    if failure == "cancelled":
        cancel = lambda: True  # noqa: E731
    else:
        model = tiny_model.__class__(**tiny_model.__dict__)
        model.build = lambda: FailingNetwork(tiny_model.build())
    with pytest.raises((Cancelled, RuntimeError)) as caught:
        detect_changes(*inputs, outputs_in(tmp_path / "out"),
                       DetectOptions(tile_size=64, overlap=16, batch_size=1, device="cpu"), cancel=cancel, model=model)
    assert caught.value.__traceback__ is not None  # kept, with its traceback
    assert not {str(path) for path in inputs} & files_open_in_this_process()


def test_existing_output_is_kept_unless_overwrite(oscd_mismatch_pair, tiny_model, tmp_path):
    outputs = outputs_in(tmp_path, distance=False)
    outputs.confidence.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        detect_changes(*oscd_mismatch_pair, outputs, DetectOptions(**FAST), model=tiny_model)
    assert outputs.confidence.read_bytes() == b"precious"
    assert not outputs.change.exists()
    detect_changes(*oscd_mismatch_pair, outputs, DetectOptions(overwrite=True, **FAST), model=tiny_model)
    assert read_raster(outputs.confidence).data_type == "Float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.tif", "confidence.tif"]


def test_a_replaced_map_takes_its_sidecars_along(oscd_mismatch_pair, tiny_model, tmp_path):
    """QGIS's pyramids (.ovr), an external mask (.msk) and statistics (.aux.xml) of an earlier run's
    map would be drawn with the new map: --overwrite removes them with the map they describe."""
    outputs = outputs_in(tmp_path, distance=False)
    detect_changes(*oscd_mismatch_pair, outputs, DetectOptions(threshold=0.99, **FAST), model=tiny_model)
    dataset = gdal.Open(str(outputs.change))  # read-only: the overviews go to an external .ovr
    dataset.BuildOverviews("NEAREST", [2])
    dataset = None
    gdal.Info(str(outputs.confidence), stats=True)  # writes confidence.tif.aux.xml
    Path(f"{outputs.change}.msk").write_bytes(b"stale")
    assert Path(f"{outputs.change}.ovr").exists() and Path(f"{outputs.confidence}.aux.xml").exists()
    detect_changes(*oscd_mismatch_pair, outputs, DetectOptions(threshold=0.01, overwrite=True, **FAST),
                   model=tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.tif", "confidence.tif"]
    dataset = gdal.Open(str(outputs.change))
    assert dataset.GetRasterBand(1).GetOverviewCount() == 0
    assert dataset.GetRasterBand(1).GetMaskFlags() != gdal.GMF_PER_DATASET


def test_no_output_replaces_an_input_behind_a_name_or_the_mask(oscd_mismatch_pair, tiny_model, tmp_path):
    """Even with --overwrite: the GeoPackage behind a GPKG: raster name, and the mask's file."""
    before, after = oscd_mismatch_pair
    package = tmp_path / "pair.gpkg"
    gdal.Translate(str(package), str(before), format="GPKG", outputType=gdal.GDT_Byte, bandList=[1, 2, 3],
                   scaleParams=[[0, 3000, 0, 255]], creationOptions=["RASTER_TABLE=before_img"])
    kept = package.read_bytes()
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif",
                            polygons=package)
    with pytest.raises(OutputError, match="one of the input images"):
        detect_changes(f"GPKG:{package}:before_img", after, outputs, DetectOptions(overwrite=True, **FAST),
                       model=tiny_model)
    assert package.read_bytes() == kept
    from test_area_of_interest import pixel_edges, write_mask
    mask = write_mask(tmp_path / "aoi.gpkg", [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160),
                                              pixel_edges(before, 96, 160)])
    kept = mask.read_bytes()
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif", polygons=mask)
    with pytest.raises(OutputError, match="one of the input images"):
        detect_changes(before, after, outputs, DetectOptions(area=AreaOfInterest(mask=str(mask)), overwrite=True,
                                                             **FAST), model=tiny_model)
    assert mask.read_bytes() == kept and not outputs.change.exists()
    # The before image by another name: a hard link here, as 'Before.tif' is 'before.tif' on macOS
    os.link(before, tmp_path / "another_name.tif")
    outputs = DetectOutputs(change=tmp_path / "another_name.tif", confidence=tmp_path / "confidence.tif")
    with pytest.raises(OutputError, match="one of the input images"):
        detect_changes(before, after, outputs, DetectOptions(overwrite=True, **FAST), model=tiny_model)


def test_an_after_image_stored_transposed_is_aligned(oscd_mismatch_pair, tiny_model, tmp_path):
    """The after crop stored transposed, its geotransform saying so (rotation terms only): the same
    image to GDAL, so the same outputs. Its footprint was taken for a line and refused, and its
    pixels for pixels of no size."""
    before, after = oscd_mismatch_pair
    source = gdal.Open(str(after))
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    pixels = source.ReadAsArray()
    transposed = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "transposed.tif"), source.RasterYSize,
                                                      source.RasterXSize, source.RasterCount, gdal.GDT_UInt16)
    transposed.SetGeoTransform((x0, 0.0, dx, y0, dy, 0.0))
    transposed.SetProjection(source.GetProjection())
    for index in range(source.RasterCount):
        transposed.GetRasterBand(index + 1).WriteArray(pixels[index].T)
    transposed = None
    plain, turned = outputs_in(tmp_path / "plain", distance=False), outputs_in(tmp_path / "turned", distance=False)
    detect_changes(before, after, plain, DetectOptions(**FAST), model=tiny_model)
    detect_changes(before, tmp_path / "transposed.tif", turned, DetectOptions(**FAST), model=tiny_model)
    # GDAL's warper samples the turned image through an approximated transform (an eighth of a pixel)
    np.testing.assert_allclose(read_raster(turned.confidence).values, read_raster(plain.confidence).values,
                               atol=0.01)


def test_an_image_placed_by_ground_control_points_is_georeferenced(oscd_mismatch_pair, tiny_model, tmp_path):
    """The before crop placed by four corner GCPs instead of a geotransform: warped north-up by them
    (as QGIS draws it), so detected as a georeferenced 10 m image, not as a picture of unknown scale
    (whose threshold and enlargement differ) nor refused for pairing with a georeferenced image."""
    before, after = oscd_mismatch_pair
    source = gdal.Open(str(before))
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    corners = [(col, row) for col in (0, source.RasterXSize) for row in (0, source.RasterYSize)]
    gcps = [gdal.GCP(x0 + dx * col, y0 + dy * row, 0, col, row) for col, row in corners]
    gdal.Translate(str(tmp_path / "gcps.tif"), source, GCPs=gcps, outputSRS=source.GetProjection())
    dataset = gdal.Open(str(tmp_path / "gcps.tif"))
    assert dataset.GetGeoTransform(can_return_null=True) is None and dataset.GetGCPCount() == 4
    dataset = None
    placed_out = outputs_in(tmp_path / "placed", distance=False)
    plain_out = outputs_in(tmp_path / "plain", distance=False)
    bundle = ModelBundle(tiny_model.config, tiny_model.state_dict, thresholds_by_pixel_size=((5.0, 0.01),),
                         input_scales_by_pixel_size=((5.0, 2),), trained=False)
    placed_result = detect_changes(tmp_path / "gcps.tif", after, placed_out, DetectOptions(**FAST), model=bundle)
    plain_result = detect_changes(before, after, plain_out, DetectOptions(**FAST), model=bundle)
    assert (placed_result.threshold, placed_result.input_scale) == (plain_result.threshold, plain_result.input_scale) \
        == (0.01, 2)
    assert placed_result.changed_area_m2 is not None
    placed_grid, plain_grid = grid_of(placed_out.change), grid_of(plain_out.change)
    assert same_crs(placed_grid[3], plain_grid[3])
    assert np.allclose(placed_grid[2], plain_grid[2], rtol=0, atol=abs(dx) / 100)
    assert abs(placed_grid[0] - plain_grid[0]) <= 1 and abs(placed_grid[1] - plain_grid[1]) <= 1


def test_inputs_may_be_gdal_dataset_names(oscd_mismatch_pair, tiny_model, tmp_path):
    """A zipped before image (/vsizip//…: the double slash must reach GDAL as it is) and an after
    image named through a driver's prefix (GTIFF_DIR:1:…) give the outputs of the plain files."""
    before, after = oscd_mismatch_pair
    with zipfile.ZipFile(tmp_path / "pair.zip", "w") as archive:
        archive.write(before, "before.tif")
    zipped = f"/vsizip/{tmp_path / 'pair.zip'}/before.tif"
    assert zipped.startswith("/vsizip//")
    named, plain = outputs_in(tmp_path / "named", distance=False), outputs_in(tmp_path / "plain", distance=False)
    detect_changes(zipped, f"GTIFF_DIR:1:{after}", named, DetectOptions(**FAST), model=tiny_model)
    detect_changes(before, after, plain, DetectOptions(**FAST), model=tiny_model)
    for name in ("change", "confidence"):
        np.testing.assert_array_equal(read_raster(getattr(named, name)).values,
                                      read_raster(getattr(plain, name)).values)


def test_inputs_may_be_raster_tables_of_a_geopackage(oscd_mismatch_pair, tiny_model, tmp_path):
    """Both images as raster tables of one GeoPackage (GPKG:file:table, as QGIS names such a layer)
    give the outputs of the same pixels in GeoTIFFs. GeoPackage tiles hold 8-bit RGB, so both
    sides are stretched to bytes first."""
    names = {}
    for role, source in zip(("before", "after"), oscd_mismatch_pair):
        as_bytes = tmp_path / f"{role}_bytes.tif"
        gdal.Translate(str(as_bytes), str(source), bandList=[1, 2, 3], outputType=gdal.GDT_Byte,
                       scaleParams=[[0, 3000, 0, 255]])
        gdal.Translate(str(tmp_path / "pair.gpkg"), str(as_bytes), format="GPKG",
                       creationOptions=[f"RASTER_TABLE={role}", "TILE_FORMAT=PNG", "APPEND_SUBDATASET=YES"])
        names[role] = as_bytes
    tables, plain = outputs_in(tmp_path / "tables", distance=False), outputs_in(tmp_path / "plain", distance=False)
    gpkg = tmp_path / "pair.gpkg"
    detect_changes(f"GPKG:{gpkg}:before", f"GPKG:{gpkg}:after", tables, DetectOptions(**FAST), model=tiny_model)
    detect_changes(names["before"], names["after"], plain, DetectOptions(**FAST), model=tiny_model)
    (width, height, geotransform, crs), expected = grid_of(tables.change), grid_of(plain.change)
    assert (width, height, crs) == (expected[0], expected[1], expected[3])
    assert geotransform == pytest.approx(expected[2], rel=1e-12)  # GeoPackage keeps 13 digits or so
    np.testing.assert_array_equal(read_raster(tables.confidence).values, read_raster(plain.confidence).values)


def _netcdf_variable(source: Path, target: Path, name: str) -> str:
    """The first three bands of ``source`` as one CF NetCDF variable (band, y, x) with x and y
    coordinates and its CRS, as climate and Earth-observation archives deliver images; returns the
    name QGIS gives such a layer, NETCDF:"file":variable."""
    image = gdal.Open(str(source))
    x0, dx, _, y0, _, dy = image.GetGeoTransform()
    group = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(target)).GetRootGroup()
    bands = group.CreateDimension("band", None, None, 3)
    axes = []
    for axis, kind, size, start, step in (("y", gdal.DIM_TYPE_HORIZONTAL_Y, image.RasterYSize, y0, dy),
                                          ("x", gdal.DIM_TYPE_HORIZONTAL_X, image.RasterXSize, x0, dx)):
        dimension = group.CreateDimension(axis, kind, None, size)
        group.CreateMDArray(axis, [dimension], gdal.ExtendedDataType.Create(gdal.GDT_Float64)).Write(
            start + (np.arange(size) + 0.5) * step)  # pixel centres
        axes.append(dimension)
    variable = group.CreateMDArray(name, [bands, *axes], gdal.ExtendedDataType.Create(gdal.GDT_UInt16))
    variable.SetSpatialRef(image.GetSpatialRef())
    variable.Write(image.ReadAsArray()[:3])
    variable = group = None  # closes the file
    return f'NETCDF:"{target}":{name}'


def test_a_netcdf_variable_is_read_as_its_bands(oscd_mismatch_pair, tiny_model, tmp_path):
    """A NetCDF variable of three bands (the subdataset name, quotes and all, as QGIS opens it)
    gives the outputs of the same pixels in a GeoTIFF, the after image on its other grid."""
    before, after = oscd_mismatch_pair
    variable = _netcdf_variable(before, tmp_path / "before.nc", "reflectance")
    three_bands = tmp_path / "before_rgb.tif"
    gdal.Translate(str(three_bands), str(before), bandList=[1, 2, 3])
    netcdf, plain = outputs_in(tmp_path / "netcdf", distance=False), outputs_in(tmp_path / "plain", distance=False)
    detect_changes(variable, after, netcdf, DetectOptions(**FAST), model=tiny_model)
    detect_changes(three_bands, after, plain, DetectOptions(**FAST), model=tiny_model)
    (width, height, geotransform, crs), expected = grid_of(netcdf.change), grid_of(plain.change)
    assert (width, height) == (expected[0], expected[1]) and same_crs(crs, expected[3])
    assert geotransform == pytest.approx(expected[2], rel=1e-12)  # coordinates kept as pixel centres
    np.testing.assert_allclose(read_raster(netcdf.confidence).values, read_raster(plain.confidence).values, atol=1e-6)
    np.testing.assert_array_equal(read_raster(netcdf.change).values, read_raster(plain.change).values)


def test_inputs_may_be_read_over_http(oscd_mismatch_pair, tiny_model, tmp_path, monkeypatch):
    """/vsicurl/http://… from a local server (a cloud-optimised GeoTIFF's way to a server): the
    same outputs as the files themselves."""
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")  # no listing of the server's folder
    before, after = oscd_mismatch_pair
    remote, local = outputs_in(tmp_path / "remote", distance=False), outputs_in(tmp_path / "local", distance=False)
    with http_server(before.parent) as url:
        signed = url.replace("://", "://reader:secret@") + f"/{before.name}?X-Amz-Signature=secret"
        detect_changes(f"/vsicurl/{signed}", f"/vsicurl/{url}/{after.name}", remote, DetectOptions(**FAST),
                       model=tiny_model)
    detect_changes(before, after, local, DetectOptions(**FAST), model=tiny_model)
    np.testing.assert_array_equal(read_raster(remote.confidence).values, read_raster(local.confidence).values)
    # The maps' record of their inputs keeps no password or signature a URL carried
    metadata = gdal.Open(str(remote.change)).GetMetadata()
    assert metadata["DEEPCL_BEFORE"] == f"/vsicurl/{url}/{before.name}" and "secret" not in str(metadata)


def test_missing_or_unreachable_inputs_of_gdals_file_systems_are_named_so(oscd_mismatch_pair, tiny_model, tmp_path,
                                                                          monkeypatch):
    """A file missing on a server or in a zip, or a server that does not answer, was called "not a
    raster GDAL can read", with no reason: GDAL reports nothing for them unless asked."""
    import socket
    import zipfile

    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    before, after = oscd_mismatch_pair
    archive = tmp_path / "pair.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(before, "before.tif")
    with socket.socket() as probe:  # a port no server listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with http_server(before.parent) as url:
        cases = [(f"/vsicurl/{url}/nothere.tif", "before image not found or its server cannot be reached: "),
                 (f"/vsicurl/http://127.0.0.1:{closed_port}/before.tif",
                  "before image not found or its server cannot be reached: .*HTTP response code .*: 0"),
                 (f"/vsizip/{archive}/nothere.tif", "before image not found: "),
                 (f"/vsizip/{tmp_path / 'nozip.zip'}/before.tif", "before image not found: ")]
        for name, words in cases:
            with pytest.raises(InputError, match=words):
                detect_changes(name, after, outputs_in(tmp_path), DetectOptions(**FAST), model=tiny_model)


@pytest.mark.parametrize("name, for_gdal", [
    ("/vsizip//data/pair.zip/before.tif", True), ("/vsicurl/https://example.org/a.tif", True),
    ('NETCDF:"/data/f.nc":red', True), ("SENTINEL2_L2A:/data/MTD_MSIL2A.xml:10m:EPSG_32633", True),
    ("https://example.org/a.tif", True), ("/data/before.tif", False), ("before.tif", False),
    ("C:\\data\\before.tif", False),
])
def test_which_names_are_for_gdal_to_resolve(name, for_gdal):
    assert is_gdal_dataset_name(name) is for_gdal


def test_a_missing_plain_file_is_named_as_missing(oscd_mismatch_pair, tiny_model, tmp_path):
    with pytest.raises(InputError, match="before image not found: "):
        detect_changes(tmp_path / "nowhere.tif", oscd_mismatch_pair[1], outputs_in(tmp_path), DetectOptions(**FAST),
                       model=tiny_model)
    with pytest.raises(InputError, match="before image not found: /vsizip/"):  # GDAL's name, GDAL's answer
        detect_changes(f"/vsizip/{tmp_path}/none.zip/b.tif", oscd_mismatch_pair[1], outputs_in(tmp_path),
                       DetectOptions(**FAST), model=tiny_model)


def test_output_names_may_end_in_any_case_and_in_tiff(oscd_mismatch_pair, tiny_model, tmp_path):
    """The file name check (a GeoTIFF must not be named .img) takes .tif, .tiff and .gpkg in any case."""
    outputs = DetectOutputs(change=tmp_path / "change.TIF", confidence=tmp_path / "confidence.tiff",
                            polygons=tmp_path / "changes.GPKG")
    detect_changes(*oscd_mismatch_pair, outputs, DetectOptions(**FAST), model=tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change.TIF", "changes.GPKG", "confidence.tiff"]
    assert gdal.Open(str(outputs.confidence)).GetDriver().ShortName == "GTiff"
    assert gdal.OpenEx(str(outputs.polygons)).GetDriver().ShortName == "GPKG"


def test_a_small_tile_alone_gets_a_quarter_of_it_as_overlap(oscd_mismatch_pair, tiny_model, tiny_model_path,
                                                            tmp_path):
    """A tile of 128 px alone (--tile 128, DetectOptions(tile_size=128)) was refused for the default
    overlap of 64, which its user never chose; larger tiles keep 64."""
    from deepcl_core.cli import main

    assert DetectOptions().overlap_used == 64 and DetectOptions(tile_size=160).overlap_used == 64
    alone = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "alone"),
                           DetectOptions(tile_size=128, device="cpu"), model=tiny_model)
    given = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "given"), DetectOptions(**FAST),
                           model=tiny_model)
    np.testing.assert_array_equal(read_raster(alone.outputs.confidence).values,
                                  read_raster(given.outputs.confidence).values)
    cli = tmp_path / "cli"
    cli.mkdir()
    assert main(["detect", *map(str, oscd_mismatch_pair), "--change", str(cli / "c.tif"), "--confidence",
                 str(cli / "f.tif"), "--tile", "128", "--device", "cpu", "--model", str(tiny_model_path)]) == 0
    np.testing.assert_array_equal(read_raster(cli / "f.tif").values, read_raster(given.outputs.confidence).values)


@pytest.mark.parametrize("options, message", [
    (dict(tile_size=100), "multiple of 32"),
    (dict(tile_size=128, overlap=64),  # an overlap for larger tiles: the message says what to lower
     r"under half the tile size \(64\); got 64: a smaller tile needs a smaller overlap \(e.g. 32\)"),
    (dict(batch_size=0), "batch"),
    (dict(threshold=1.0), "threshold"),
    (dict(input_scale=0), "input scale"),
    (dict(min_area=-1.0), "minimum area"),
    (dict(compression="lzw"), "compression"),
    (dict(device="tpu"), "unknown device"),
])
def test_bad_options_are_input_errors(oscd_mismatch_pair, tiny_model, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path), DetectOptions(**options), model=tiny_model)
    assert list(tmp_path.iterdir()) == []


def test_without_a_threshold_the_model_s_one_for_the_pixel_size_is_used(oscd_mismatch_pair, levir_pair,
                                                                         tiny_model, tmp_path):
    from dataclasses import replace

    model = replace(tiny_model, threshold=0.6, thresholds_by_pixel_size=((5.0, 0.45),))
    coarse = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "oscd", distance=False),
                            DetectOptions(**FAST), model=model)  # Sentinel-2: about 10 m pixels
    unknown = detect_changes(*levir_pair, outputs_in(tmp_path / "levir", distance=False),
                             DetectOptions(**FAST), model=model)  # no georeference
    chosen = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "chosen", distance=False),
                            DetectOptions(threshold=0.55, **FAST), model=model)
    assert (coarse.threshold, unknown.threshold, chosen.threshold) == (0.45, 0.6, 0.55)
    for result in (coarse, unknown, chosen):
        change = read_raster(result.outputs.change).values
        confidence = read_raster(result.outputs.confidence).values
        np.testing.assert_array_equal(change == 1, confidence >= result.threshold)


def test_coarse_images_are_enlarged_by_the_model_s_input_scale(oscd_mismatch_pair, levir_pair, tiny_model, tmp_path):
    """A model that enlarges 10 m images twice cuts them in tiles of half the side (the network's
    tile stays the same); images without georeference are not enlarged."""
    from dataclasses import replace

    model = replace(tiny_model, input_scales_by_pixel_size=((5.0, 2),))
    plain = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "plain", distance=False),
                           DetectOptions(**FAST), model=tiny_model)
    enlarged = detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / "enlarged", distance=False),
                              DetectOptions(**FAST), model=model)
    unknown = detect_changes(*levir_pair, outputs_in(tmp_path / "levir", distance=False),
                             DetectOptions(**FAST), model=model)
    width, height = read_raster(plain.outputs.confidence).values.shape[::-1]
    assert (plain.input_scale, enlarged.input_scale, unknown.input_scale) == (1, 2, 1)
    assert plain.tiles == len(TileGrid.for_network(width, height, 128, 32))
    assert enlarged.tiles == len(TileGrid.for_network(width, height, 128, 32, scale=2)) > plain.tiles
    assert TileGrid.for_network(width, height, 128, 32, scale=2).tile == 64
    confidence = read_raster(enlarged.outputs.confidence).values
    assert confidence.shape == (height, width) and 0 <= confidence[confidence >= 0].min()
    assert not np.array_equal(confidence, read_raster(plain.outputs.confidence).values)


def test_every_way_of_reading_and_writing_gives_the_same_outputs(oscd_mismatch_pair, tiny_model, tmp_path):
    """All in one thread, in turn with the network; the before and after images read side by side
    in turn (the CPU's way); and as beside a GPU, background threads that read tiles ahead, each
    with its own handles of the pair (the after image warped onto the before grid), with GDAL
    compressing output blocks in several: the same outputs, bit for bit."""
    options = dict(FAST, tile_size=64, overlap=16, batch_size=3)  # 36 tiles, more than threads ahead
    ways = {"one thread": dict(io_threads=1, overlap_io=False), "in turn": dict(io_threads=2, overlap_io=False),
            "background": dict(io_threads=4, overlap_io=True)}
    results = {name: detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path / name.replace(" ", "_")),
                                    DetectOptions(**way, **options), model=tiny_model)
               for name, way in ways.items()}
    first = results["one thread"]
    assert first.tiles > 4
    for result in results.values():
        assert result.tiles == first.tiles
        for name in ("change", "confidence", "distance"):
            np.testing.assert_array_equal(read_raster(getattr(result.outputs, name)).values,
                                          read_raster(getattr(first.outputs, name)).values)


@pytest.mark.parametrize("overlap_io, background_threads", [(None, False), (True, True)])
def test_the_cpu_reads_and_writes_in_turn_with_the_network(oscd_mismatch_pair, tiny_model, tmp_path, overlap_io,
                                                           background_threads):
    """On the CPU no reader or writer thread runs beside the network (it would take a core from
    torch's threads); asked for, they do, as beside a GPU."""
    seen = set()
    options = DetectOptions(overlap_io=overlap_io, io_threads=2, **FAST)  # 2: a helper reads, whatever the cores
    detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path), options,
                   progress=lambda fraction, message: seen.update(t.name for t in threading.enumerate()),
                   model=tiny_model)
    assert ("deepcl-writer" in seen) == background_threads
    assert any(name.startswith("deepcl-reader") for name in seen)  # the helper reading the before image, or the readers


def test_beside_an_accelerator_at_most_eight_threads_read(oscd_mismatch_pair, tiny_model, tmp_path, monkeypatch):
    """On a 16-core machine, 8 readers beside the GPU: on an H100's host 8 ran faster than 4 or 16."""
    monkeypatch.setattr(inference, "available_cores", lambda: 16)
    asked, readers = [], set()
    tile_reader = detect.TileReader

    def counted(read, positions, handles, open_handles, threads, depth):
        asked.append(threads)
        return tile_reader(read, positions, handles, open_handles, threads, depth=depth)
    monkeypatch.setattr(detect, "TileReader", counted)
    options = DetectOptions(tile_size=32, overlap=8, batch_size=4, device="cpu", overlap_io=True)
    detect_changes(*oscd_mismatch_pair, outputs_in(tmp_path), options, model=tiny_model,
                   progress=lambda fraction, message: readers.update(
                       t.name for t in threading.enumerate() if t.name.startswith("deepcl-reader")))
    assert asked == [8] and 1 < len(readers) <= 8  # the pool starts its threads as work waits for them


def test_deflate_outputs_hold_the_same_values(oscd_run, tiny_model, tmp_path):
    """For software that cannot read ZSTD: the same outputs, DEFLATE-compressed (both lossless)."""
    before, after, zstd_outputs, _, threshold = oscd_run
    outputs = outputs_in(tmp_path)
    detect_changes(before, after, outputs, DetectOptions(threshold=threshold, compression="deflate", **FAST),
                   model=tiny_model)
    assert_contract(outputs, before, compression="DEFLATE")
    for name in ("change", "confidence", "distance"):
        np.testing.assert_array_equal(read_raster(getattr(outputs, name)).values,
                                      read_raster(getattr(zstd_outputs, name)).values)


def test_readers_keep_the_decoded_blocks_of_small_inputs_only(oscd_mismatch_pair, tiny_model, tmp_path):
    """Reading in turn, GDAL's decoded blocks stay cached for the whole run when the pair fits
    KEEP_DECODED_BYTES (the statistics' reading then serves the tiles too); larger inputs drop them
    after each read of a strip (tests/test_row_strips.py)."""
    pair = _open_pair(*oscd_mismatch_pair, DetectOptions(), tiny_model)
    assert pair.after is not pair.after_source  # warped: three datasets, each decodes its own blocks
    assert pair.after_datasets() == [pair.after, pair.after_source] and len(pair.datasets()) == 3
    expected = sum(d.RasterXSize * d.RasterYSize * d.RasterCount * 2 for d in pair.datasets())  # UInt16
    assert _decoded_bytes(pair) == expected < KEEP_DECODED_BYTES
    assert _keeps_decoded(pair)

    side = 4096  # 3 bands of 8 bits: 2 × 48 MiB decoded; sparse files (no block written)
    large = [tmp_path / f"{name}.tif" for name in ("before", "after")]
    for path in large:
        gdal.GetDriverByName("GTiff").Create(str(path), side, side, 3, gdal.GDT_Byte, ["TILED=YES", "SPARSE_OK=TRUE"])
    large_pair = _open_pair(*large, DetectOptions(), tiny_model)
    assert large_pair.after_datasets() == [large_pair.after]  # one grid: nothing warped
    assert _decoded_bytes(large_pair) == 2 * 3 * side * side > KEEP_DECODED_BYTES
    assert not _keeps_decoded(large_pair)


def batches_seen(monkeypatch) -> List[Tuple[int, bool]]:
    """(tiles, page-locked) of every batch detection hands the network, from now on."""
    seen = []
    launch_network = network_on_tiles.launch_network

    def recording(network, before, after, device, *args, **kwargs):
        seen.append((len(before), torch.from_numpy(before).is_pinned() if device.type == "cuda" else False))
        return launch_network(network, before, after, device, *args, **kwargs)
    monkeypatch.setattr(network_on_tiles, "launch_network", recording)
    return seen


NODATA_COLUMNS = (0, 70)  # in the after image: the first two tile columns hold no valid pixel


def pair_with_empty_tiles(pair, folder: Path) -> Tuple[Path, Path]:
    before, after = pair
    return before, as_reflectance(after, folder / "after.tif", nan_block=((0, 160), NODATA_COLUMNS))


def test_each_row_runs_in_even_batches(same_grid_pair, tiny_model, tmp_path, monkeypatch):
    """192 px wide in tiles of 32 overlapping by 8: 8 tiles a row, at most 6 a batch: 4 and 4. The
    tiles without a valid pixel are skipped on the CPU, so the first batch of each row is smaller."""
    seen = batches_seen(monkeypatch)
    options = DetectOptions(tile_size=32, overlap=8, batch_size=6, device="cpu")
    result = detect_changes(*same_grid_pair, outputs_in(tmp_path / "full"), options, model=tiny_model)
    assert result.tiles == 8 * 7 and [tiles for tiles, _ in seen] == [4, 4] * 7
    seen.clear()
    detect_changes(*pair_with_empty_tiles(same_grid_pair, tmp_path), outputs_in(tmp_path / "empty"), options,
                   model=tiny_model)
    assert [tiles for tiles, _ in seen] == [2, 4] * 7  # the tiles at x = 0 and 24 hold only NaN


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_every_batch_has_one_shape_in_page_locked_memory(same_grid_pair, tiny_model, tmp_path,
                                                                 monkeypatch):
    """Every batch has the row's batch size, a short one padded and one with empty tiles computed
    whole (cuDNN prepares each new shape once, slowly), in page-locked memory (the copy to the GPU
    reads it directly); the results are the CPU's, within TF32 convolutions' rounding."""
    pair = pair_with_empty_tiles(same_grid_pair, tmp_path)
    options = dict(tile_size=32, overlap=8, batch_size=6, precision="fp32")
    seen = batches_seen(monkeypatch)
    on_gpu = detect_changes(*pair, outputs_in(tmp_path / "cuda"), DetectOptions(device="cuda", **options),
                            model=tiny_model)
    assert seen == [(4, True)] * 14
    on_cpu = detect_changes(*pair, outputs_in(tmp_path / "cpu"), DetectOptions(device="cpu", **options),
                            model=tiny_model)
    gpu, cpu = (read_raster(result.outputs.confidence).values for result in (on_gpu, on_cpu))
    np.testing.assert_array_equal(gpu == FLOAT_NODATA, cpu == FLOAT_NODATA)
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)


@pytest.mark.parametrize("turned_on", ["gdal", "gdal ogr osr", "ogr gdal", "osr ogr gdal"])
def test_a_host_with_gdal_exceptions_on_gets_the_engines_errors(same_grid_pair, tiny_model, tmp_path, turned_on):
    """A program that called gdal.UseExceptions() (GDAL 4's default) got bare RuntimeErrors for a
    file that is not a raster and a truncated one; it gets InputErrors, and its modes back. With the
    exceptions of two or three of gdal, ogr and osr on, every call failed ("Cannot call
    gdal.DontUseExceptions() at that point since the stack of error handlers is: osr ogr gdal"), or
    every call after the first: GDAL 3.6 takes them off only in the reverse of the order they were turned on."""
    from osgeo import osr

    modules = [{"gdal": gdal, "ogr": ogr, "osr": osr}[name] for name in turned_on.split()]
    before, after = same_grid_pair
    not_a_raster, truncated = tmp_path / "notes.tif", tmp_path / "truncated.tif"
    not_a_raster.write_text("not a raster")
    truncated.write_bytes(Path(before).read_bytes()[:len(Path(before).read_bytes()) // 2])
    modes = [gdal.GetUseExceptions(), ogr.GetUseExceptions(), osr.GetUseExceptions()]
    for module in modules:
        module.UseExceptions()
    try:
        for bad in (not_a_raster, truncated):
            with pytest.raises(InputError):
                detect_changes(bad, after, outputs_in(tmp_path / bad.stem), DetectOptions(**FAST), model=tiny_model)
            assert [bool(m.GetUseExceptions()) for m in (gdal, ogr, osr)] == [m in modules for m in (gdal, ogr, osr)]
        for run in ("first", "second"):
            assert detect_changes(before, after, outputs_in(tmp_path / run), DetectOptions(**FAST),
                                  model=tiny_model).valid_pixels > 0
    finally:
        for module in reversed(modules):
            module.DontUseExceptions()
    assert [gdal.GetUseExceptions(), ogr.GetUseExceptions(), osr.GetUseExceptions()] == modes


def test_numpy_numbers_and_paths_are_taken_and_other_types_refused_in_words(same_grid_pair, tiny_model, tmp_path):
    """What a notebook or a data frame hands over: numpy integers as the tile size (GDAL's bindings
    refused them after the statistics and the network were ready), an array of bands (a
    "truth value … is ambiguous" error), a Path as the mask; a float tile size or a text threshold
    are refused in words rather than with a TypeError."""
    from test_area_of_interest import write_mask

    before, after = same_grid_pair
    x0, dx, _, y0, _, dy = gdal.Open(str(before)).GetGeoTransform()
    mask = write_mask(tmp_path / "mask.gpkg", [(x0, y0), (x0 + 80 * dx, y0), (x0 + 80 * dx, y0 + 80 * dy),
                                               (x0, y0 + 80 * dy)], epsg=4326)
    options = DetectOptions(tile_size=np.int64(128), overlap=np.int32(16), bands_before=np.array([1, 2, 3]),
                            threshold=np.float32(0.4), area=AreaOfInterest(mask=mask), device="cpu")
    result = detect_changes(before, after, outputs_in(tmp_path / "numpy"), options, model=tiny_model)
    assert result.valid_pixels == 80 * 80 and options.bands_before == (1, 2, 3)
    for wrong, words in (({"tile_size": 128.0}, "tile size must be a whole number; got 128.0"),
                         ({"threshold": "0.4"}, "threshold must be a number; got '0.4'")):
        with pytest.raises(InputError, match=words):
            detect_changes(before, after, outputs_in(tmp_path / "wrong"), DetectOptions(**wrong), model=tiny_model)
    # Containers of the wrong kind, a missing output, bytes paths and a torch.device: AttributeErrors and
    # TypeErrors before ("'dict' object has no attribute 'validate'", "… 'NoneType' … 'with_name'")
    outputs = outputs_in(tmp_path / "kinds")
    for call, words in ((lambda: detect_changes(before, after, outputs, {"device": "cpu"}, model=tiny_model),
                         r"give the options as a DetectOptions\(…\); got a dict"),
                        (lambda: detect_changes(before, after, (outputs.change, outputs.confidence), model=tiny_model),
                         r"give the outputs as a DetectOutputs\(…\); got a tuple"),
                        (lambda: DetectOutputs(None, tmp_path / "f.tif"), "change and the confidence maps both"),
                        # An extent given as the area ("'tuple' object has no attribute 'restrict'"), or of 3 numbers
                        (lambda: detect_changes(before, after, outputs, DetectOptions(area=(x0, y0, x0 + 1, y0 + 1)),
                                                model=tiny_model), r"area must be an AreaOfInterest \(an extent"),
                        (lambda: AreaOfInterest((x0, y0, x0 + 1)), "an extent is four numbers")):
        with pytest.raises(InputError, match=words):
            call()
    assert not (tmp_path / "kinds").exists() or not list((tmp_path / "kinds").iterdir())
    as_bytes = DetectOutputs(os.fsencode(tmp_path / "bytes_change.tif"), os.fsencode(tmp_path / "bytes_conf.tif"))
    result = detect_changes(os.fsencode(before), os.fsencode(after), as_bytes,
                            DetectOptions(tile_size=128, overlap=16, device=torch.device("cpu")), model=tiny_model)
    assert result.device == "cpu" and (tmp_path / "bytes_conf.tif").is_file()


@pytest.mark.parametrize("planted", ["confidence", "polygons"])
def test_an_output_another_run_wrote_meanwhile_is_kept_without_overwrite(same_grid_pair, tiny_model, tmp_path,
                                                                          planted):
    """Two jobs given the same output, both past the check before the run: the one that finished
    second replaced the other's map without a word. It fails now, keeps the other's file, and
    leaves none of its own (the change map, put in place first, is taken back)."""
    before, after = same_grid_pair
    outputs = DetectOutputs(**{name: tmp_path / f"{name}{ending}" for name, ending in (
        ("change", ".tif"), ("confidence", ".tif"), ("polygons", ".gpkg"))})
    other_runs = getattr(outputs, planted)

    def another_run_writes(fraction: float, message: str) -> None:
        if not other_runs.exists():
            other_runs.write_bytes(b"another run's map")

    with pytest.raises(OutputError, match=f"output {other_runs} appeared while this run worked"):
        detect_changes(before, after, outputs, DetectOptions(**FAST), progress=another_run_writes, model=tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other_runs.name]
    assert other_runs.read_bytes() == b"another run's map"
    detect_changes(before, after, outputs, DetectOptions(overwrite=True, **FAST), model=tiny_model)
    assert read_polygons(outputs.polygons) and gdal.Open(str(outputs.confidence)) is not None


def test_scores_that_are_no_numbers_stop_the_run_and_write_nothing(levir_pair, tmp_path):
    """A network scoring NaN (weights of a diverged training): NaN passed the clipping to 0-1 and
    compared as below the threshold, so the run wrote "0 % changed", exit 0, beside a confidence
    map of NaN its nodata did not mark."""
    import dataclasses

    from deepcl_core.errors import ModelFileError
    from deepcl_core.model_file import load_model

    bundle = load_model(detect.BUNDLED_MODEL)
    broken = dict(bundle.state_dict)
    name = next(key for key, tensor in broken.items() if key.startswith("decoder") and tensor.is_floating_point())
    broken[name] = torch.full_like(broken[name], float("nan"))
    out = outputs_in(tmp_path / "out")
    with pytest.raises(ModelFileError, match=r"^the network gave no number as its score for \d+ valid pixels "
                                             r"from row 0 on: its weights cannot detect"):
        detect.detect_changes(levir_pair[0], levir_pair[1], out, DetectOptions(**FAST),
                              model=dataclasses.replace(bundle, state_dict=broken))
    assert list((tmp_path / "out").iterdir()) == []


def test_each_map_says_what_made_it(levir_pair, tmp_path):
    """A delivered map told nothing of its making (threshold, model, inputs) without the run's log."""
    from deepcl_core import __version__

    out = outputs_in(tmp_path / "out")
    result = detect.detect_changes(str(levir_pair[0]), str(levir_pair[1]), out, DetectOptions(threshold=0.4, **FAST))
    for path in (out.change, out.confidence, out.distance):
        metadata = gdal.Open(str(path)).GetMetadata()
        assert {key: metadata[key] for key in ("DEEPCL_VERSION", "DEEPCL_MODEL", "DEEPCL_BEFORE", "DEEPCL_AFTER",
                                              "DEEPCL_THRESHOLD", "DEEPCL_INPUT_SCALE")} == {
            "DEEPCL_VERSION": __version__, "DEEPCL_MODEL": "the bundled model (deepcl_default.pt)",
            "DEEPCL_BEFORE": str(levir_pair[0]), "DEEPCL_AFTER": str(levir_pair[1]), "DEEPCL_THRESHOLD": "0.4",
            "DEEPCL_INPUT_SCALE": str(result.input_scale)}
        assert metadata["DEEPCL_CREATED_UTC"].endswith("Z")
