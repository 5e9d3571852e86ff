"""Detection restricted to an area of interest (an extent, a mask of polygons, or both), on real
pairs: the same result as on images cut beforehand, nodata outside the mask, and clear errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from deepcl_core.area_of_interest import AreaOfInterest
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import InputError

from core_test_helpers import crop

FAST = dict(tile_size=128, overlap=32, device="cpu", threshold=0.3)


def run(before, after, folder: Path, model, area=None) -> Tuple[np.ndarray, np.ndarray, tuple]:
    folder.mkdir()
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    detect_changes(before, after, outputs, DetectOptions(area=area, **FAST), model=model)
    change, confidence = gdal.Open(str(outputs.change)), gdal.Open(str(outputs.confidence))
    return change.ReadAsArray(), confidence.ReadAsArray(), change.GetGeoTransform()


def pixel_edges(path: Path, column: float, row: float) -> Tuple[float, float]:
    x0, dx, _, y0, _, dy = gdal.Open(str(path)).GetGeoTransform()
    return x0 + column * dx, y0 + row * dy


def test_an_extent_gives_what_images_cut_beforehand_give(oscd_mismatch_pair, tiny_model, tmp_path):
    """The OSCD crop, the after image on another grid: columns 40-140, rows 30-110 of the before."""
    before, after = oscd_mismatch_pair
    (x_min, y_max), (x_max, y_min) = pixel_edges(before, 40, 30), pixel_edges(before, 140, 110)
    # Edges a hair inside the pixels, as an extent drawn by hand would be.
    eps = 1e-3 * abs(gdal.Open(str(before)).GetGeoTransform()[1])
    area = AreaOfInterest(extent=(x_min + eps, y_min + eps, x_max - eps, y_max - eps))
    change, confidence, geotransform = run(before, after, tmp_path / "area", tiny_model, area)
    cut = crop(before, tmp_path / "cut_before.tif", 40, 30, 100, 80)
    expected_change, expected_confidence, expected_geotransform = run(cut, after, tmp_path / "cut", tiny_model)
    assert change.shape == (80, 100)
    np.testing.assert_array_equal(change, expected_change)
    np.testing.assert_array_equal(confidence, expected_confidence)
    assert geotransform == pytest.approx(expected_geotransform)
    assert np.ptp(confidence) > 0  # maps that vary, so equality says something


def test_an_extent_on_images_without_georeference_is_in_qgis_pixel_units(levir_pair, tiny_model, tmp_path):
    """x = column, y = -row, as QGIS shows such an image; the outputs carry that place, so they lie
    on the cut in QGIS."""
    before, after = levir_pair
    area = AreaOfInterest(extent=(50.0, -120.0, 150.0, -20.0))
    change, confidence, geotransform = run(str(before), str(after), tmp_path / "area", tiny_model, area)
    cut = [crop(image, tmp_path / f"cut_{image.stem}.tif", 50, 20, 100, 100) for image in (before, after)]
    expected_change, expected_confidence, _ = run(*cut, tmp_path / "cut", tiny_model)
    np.testing.assert_array_equal(change, expected_change)
    np.testing.assert_array_equal(confidence, expected_confidence)
    assert geotransform == (50.0, 1.0, 0.0, -20.0, 0.0, -1.0)


def write_mask(path: Path, corners_lonlat, epsg: int = 3857) -> Path:
    """A GeoPackage layer 'aoi' with one polygon, its corners given in EPSG:4326 and stored in ``epsg``."""
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(4326)
    target.ImportFromEPSG(epsg)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in corners_lonlat + corners_lonlat[:1]:
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    polygon.Transform(osr.CoordinateTransformation(source, target))
    data = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = data.CreateLayer("aoi", target, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(polygon)
    layer.CreateFeature(feature)
    data = None
    return path


def test_a_mask_in_another_crs_leaves_nodata_outside_its_polygons(oscd_mismatch_pair, tiny_model, tmp_path):
    """A triangle over the left half of the 192×160 crop, stored in Web Mercator: outputs cover its
    box, nodata outside it, and half the box is valid."""
    before, after = oscd_mismatch_pair
    corners = [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160), pixel_edges(before, 96, 160)]
    mask = write_mask(tmp_path / "mask.gpkg", corners)
    change, confidence, _ = run(before, after, tmp_path / "masked", tiny_model, AreaOfInterest(mask=str(mask)))
    assert abs(change.shape[0] - 160) <= 1 and abs(change.shape[1] - 96) <= 1  # the triangle's box
    assert change[5, 90] == 255 and confidence[5, 90] == -1  # top right: outside the triangle
    assert change[150, 5] != 255  # bottom left: inside
    assert 0.45 < (change != 255).mean() < 0.55


def test_a_mask_without_a_crs_is_taken_in_the_before_images_and_the_run_says_so(oscd_mismatch_pair, tiny_model,
                                                                                tmp_path):
    """A shapefile without its .prj: the warning reaches the run's warnings (and so the command line's
    JSON and Processing's log), not only the logger."""
    before, after = oscd_mismatch_pair
    corners = [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160), pixel_edges(before, 96, 160)]
    polygon = write_mask(tmp_path / "mask.gpkg", corners, epsg=4326)
    for name in ("with_crs", "mask"):
        gdal.VectorTranslate(str(tmp_path / f"{name}.shp"), str(polygon), format="ESRI Shapefile")
    (tmp_path / "mask.prj").unlink()
    with_crs = tmp_path / "with_crs.shp"
    results = {}
    for name, mask in (("with_crs", with_crs), ("without", tmp_path / "mask.shp")):
        (tmp_path / name).mkdir()
        outputs = DetectOutputs(change=tmp_path / name / "change.tif", confidence=tmp_path / name / "confidence.tif")
        results[name] = detect_changes(before, after, outputs, DetectOptions(area=AreaOfInterest(mask=str(mask)),
                                                                             **FAST), model=tiny_model)
    assert [w for w in results["without"].warnings if "CRS" in w] == [
        f"the mask {tmp_path / 'mask.shp'} has no CRS: its coordinates are taken to be in the before image's"]
    assert not [w for w in results["with_crs"].warnings if "CRS" in w]
    # The same pixels but along the triangle's slanted edge (about 190 px), where the transformation
    # the CRS brings (4326 to 4326) rounds the edge otherwise
    assert abs(results["without"].valid_pixels - results["with_crs"].valid_pixels) < 190


def test_an_extent_and_a_mask_together_cover_their_common_part(oscd_mismatch_pair, tiny_model, tmp_path):
    before, after = oscd_mismatch_pair
    corners = [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160), pixel_edges(before, 96, 160)]
    mask = write_mask(tmp_path / "mask.gpkg", corners)
    (x_min, y_max), (x_max, y_min) = pixel_edges(before, 10, 100), pixel_edges(before, 150, 150)
    area = AreaOfInterest(extent=(x_min, y_min, x_max, y_max), mask=str(mask), mask_layer="aoi")
    change, _, _ = run(before, after, tmp_path / "both", tiny_model, area)
    assert abs(change.shape[0] - 50) <= 1 and abs(change.shape[1] - 86) <= 1  # rows 100-150, columns 10-96


@pytest.mark.parametrize("make_area, words", [
    (lambda b, m: AreaOfInterest(extent=(0.0, 0.0, 1.0, 1.0)), ["lies outside the before image", "spans x 54.5"]),
    (lambda b, m: AreaOfInterest(mask="/no/such/mask.gpkg"), ["mask not found", "/no/such/mask.gpkg"]),
    (lambda b, m: AreaOfInterest(mask=str(m), mask_layer="roads"), ["no layer 'roads'", "its layers: aoi"]),
    (lambda b, m: AreaOfInterest(extent=(*b(150, 10), *b(190, 0)), mask=str(m)),
     ["the extent", "and the mask's polygons do not overlap"]),
], ids=["extent_outside", "missing_mask", "missing_mask_layer", "extent_beside_the_mask"])
def test_an_area_that_cannot_be_used_is_refused_in_words(oscd_mismatch_pair, tiny_model, tmp_path, make_area, words):
    before, after = oscd_mismatch_pair

    def corner(column, row):  # x at the column, y at the row below it, as an extent's min pair
        x, _ = pixel_edges(before, column, 0)
        _, y = pixel_edges(before, 0, row)
        return x, y

    mask = write_mask(tmp_path / "mask.gpkg", [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160),
                                               pixel_edges(before, 96, 160)])
    with pytest.raises(InputError) as error:
        run(before, after, tmp_path / "out", tiny_model, make_area(corner, mask))
    assert all(word in str(error.value) for word in words), str(error.value)
    assert not list((tmp_path / "out").iterdir())


def test_a_mask_of_features_without_geometry_holds_no_polygon(oscd_mismatch_pair, tiny_model, tmp_path):
    """A GeoJSON feature with "geometry": null: said so, not read as an area at x 0, y 0."""
    before, after = oscd_mismatch_pair
    mask = tmp_path / "null.geojson"
    mask.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
                    '"geometry": null}]}')
    with pytest.raises(InputError, match=f"mask {mask} holds no polygon"):
        run(before, after, tmp_path / "out", tiny_model, AreaOfInterest(mask=str(mask)))


def test_a_mask_needs_georeferenced_images_and_an_extent_needs_min_below_max(levir_pair, tiny_model, tmp_path):
    before, after = levir_pair
    mask = write_mask(tmp_path / "mask.gpkg", [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
    with pytest.raises(InputError, match="a mask needs georeferenced images"):
        run(str(before), str(after), tmp_path / "out", tiny_model, AreaOfInterest(mask=str(mask)))
    with pytest.raises(InputError, match="min < max"):
        AreaOfInterest(extent=(10.0, 0.0, 5.0, 1.0))


def test_command_line_extent_takes_negative_numbers_and_mask_layer_needs_a_mask(levir_pair, tiny_model_path,
                                                                                 tmp_path):
    before, after = levir_pair
    command = [sys.executable, "-m", "deepcl_core", "detect", str(before), str(after), "--model", str(tiny_model_path),
               "--change", str(tmp_path / "c.tif"), "--confidence", str(tmp_path / "p.tif"), "--tile", "128",
               "--overlap", "32", "--device", "cpu"]
    done = subprocess.run(command + ["--extent", "0", "-64", "64", "0"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = gdal.Open(str(tmp_path / "c.tif"))
    assert (result.RasterXSize, result.RasterYSize) == (64, 64)
    refused = subprocess.run(command + ["--mask-layer", "aoi", "--overwrite"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--mask-layer names a layer of --mask" in refused.stderr


def test_background_readers_cut_as_the_run_did_and_find_the_window_once(oscd_mismatch_pair, tiny_model, tmp_path,
                                                                         monkeypatch):
    """Beside a GPU, reader threads open their own handles: with a mask they read the same pixels
    as a run that reads in turn, and the mask's box is found once, not again in every thread."""
    from deepcl_core import area_of_interest

    before, after = oscd_mismatch_pair
    corners = [pixel_edges(before, 0, 0), pixel_edges(before, 0, 160), pixel_edges(before, 96, 160)]
    area = AreaOfInterest(mask=str(write_mask(tmp_path / "mask.gpkg", corners)))
    found = []
    original = area_of_interest._mask_bounds
    monkeypatch.setattr(area_of_interest, "_mask_bounds", lambda *args: found.append(args) or original(*args))
    maps = {}
    for in_background in (False, True):
        folder = tmp_path / f"background_{in_background}"
        folder.mkdir()
        outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
        options = DetectOptions(area=area, overlap_io=in_background, io_threads=2, **FAST)
        detect_changes(before, after, outputs, options, model=tiny_model)
        maps[in_background] = gdal.Open(str(outputs.confidence)).ReadAsArray()
    np.testing.assert_array_equal(maps[True], maps[False])
    assert len(found) == 2  # once per run


def test_a_mask_of_curves_cuts_as_its_straight_segments_do(oscd_mismatch_pair, tiny_model, tmp_path):
    """A circle drawn with QGIS's curve tools (a CurvePolygon in a GeoPackage): GDAL's warper cuts
    by straight-sided polygons only, and the run stopped ("Cutline not of polygon type")."""
    before, after = oscd_mismatch_pair
    (x, y), (edge, _) = pixel_edges(before, 80, 80), pixel_edges(before, 130, 80)
    circle = ogr.CreateGeometryFromWkt(f"CURVEPOLYGON (CIRCULARSTRING ({2 * x - edge} {y}, {edge} {y}, "
                                       f"{2 * x - edge} {y}))")
    crs = gdal.Open(str(before)).GetSpatialRef()
    masks = []
    for name, geometry in (("curved", circle), ("linear", circle.GetLinearGeometry())):
        data = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / f"{name}.gpkg"))
        layer = data.CreateLayer("drawn", crs, geometry.GetGeometryType())
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
        data = layer = feature = None
        area = AreaOfInterest(mask=str(tmp_path / f"{name}.gpkg"))
        masks.append(run(before, after, tmp_path / name, tiny_model, area))
    (curved_change, curved_confidence, _), (linear_change, linear_confidence, _) = masks
    np.testing.assert_array_equal(curved_change, linear_change)
    np.testing.assert_array_equal(curved_confidence, linear_confidence)
    assert 0.7 < (curved_change != 255).mean() < 0.85  # a circle in its box: pi/4 of it
    assert not [name for name in gdal.ReadDir("/vsimem/") or () if name.startswith("deepcl_mask")]  # nothing left
