"""Change polygons (GeoPackage) in the CRS QGIS draws the change map in, on real data: the OSCD
bercy label (Paris, Sentinel-2, EPSG:4326) warped to other CRSs as a change map, and a LEVIR-CD
label without georeference."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from core_test_helpers import crop
from deepcl_core import area, polygons
from deepcl_core.area import geometry_area_m2
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import Cancelled
from deepcl_core.grid import Grid, map_geotransform
from deepcl_core.polygons import write_change_polygons

US_FEET_UTM = "+proj=utm +zone=31 +datum=WGS84 +units=us-ft +no_defs"
LOCAL_FEET = 'LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["foot",0.3048],AXIS["X",EAST],AXIS["Y",NORTH]]'
BERCY_LON, BERCY_LAT = (2.359, 2.402), (48.820, 48.867)  # the label's footprint, in degrees
AXES = ["IGNORE_DATA_AXIS_TO_SRS_AXIS_MAPPING=YES"]


def label_on(data_dir: Path, folder: Path, crs: str) -> Tuple[Path, Path]:
    """Bercy's change label warped to ``crs`` as a change map (nearest, 255 outside it), and as a
    confidence map on the same grid (bilinear, so fractions along the edges); a local CRS (WKT
    LOCAL_CS) is assigned to the UTM warp, as GDAL cannot warp into one."""
    folder.mkdir()
    label = data_dir / "oscd" / "bercy" / "label.tif"
    change, confidence = folder / "change.tif", folder / "confidence.tif"
    target = "EPSG:32631" if crs.startswith("LOCAL_CS") else crs
    assert gdal.Warp(str(change), str(label), dstSRS=target, resampleAlg="near", dstNodata=255) is not None
    grid = Grid.of(gdal.Open(str(change)))
    x0, y0, x1, y1 = grid.bounds()
    assert gdal.Warp(str(confidence), str(label), dstSRS=target, resampleAlg="bilinear", outputType=gdal.GDT_Float32,
                     width=grid.width, height=grid.height, outputBounds=(x0, y0, x1, y1)) is not None
    if target != crs:
        for path in (change, confidence):
            gdal.Open(str(path), gdal.GA_Update).SetProjection(crs)
    return change, confidence


def read_polygons(path: Path) -> Tuple[osr.SpatialReference, List[Dict[str, Any]], int]:
    """The layer's CRS, its features (fields and geometry) and the srs_id the GeoPackage gives it,
    read into Python objects: a layer left to the garbage collector after its data source crashes."""
    data = ogr.Open(str(path))
    layer = data.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    features = [{name: feature.GetField(name) for name in names} | {"geometry": feature.GetGeometryRef().Clone()}
                for feature in layer]
    srs = layer.GetSpatialRef().Clone()
    rows = data.ExecuteSQL(f"SELECT srs_id FROM gpkg_contents WHERE table_name = '{layer.GetName()}'")
    srs_id = rows.GetNextFeature().GetField(0)
    data.ReleaseResultSet(rows)
    layer = data = None
    return srs, features, srs_id


def srs_of(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    return srs


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32631", "EPSG:3857", "EPSG:2263", US_FEET_UTM, LOCAL_FEET],
                         ids=["wgs84", "utm", "web_mercator", "ny_state_plane_feet", "utm_us_feet", "local_feet"])
def test_polygons_are_in_the_crs_of_the_change_map(crs, data_dir, tmp_path):
    """GDAL's GeoPackage driver took UTM on WGS 84 in US survey feet, as GDAL reads it from a
    GeoTIFF, for EPSG:32631 in metres: QGIS drew the polygons hundreds of km from the maps."""
    change, confidence = label_on(data_dir, tmp_path / "maps", crs)
    grid = Grid.of(gdal.Open(str(change)))
    out = tmp_path / "changes.gpkg"
    count = write_change_polygons(change, confidence, grid, out)
    srs, features, _ = read_polygons(out)
    assert count == len(features) > 0
    raster_srs = srs_of(grid.crs_wkt)
    assert srs.IsSame(raster_srs, AXES), srs.ExportToWkt()
    if raster_srs.IsLocal():
        return
    # Where QGIS draws them: in Paris, on the label, as the maps are.
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_degrees = osr.CoordinateTransformation(srs, wgs84)
    for feature in features:
        lon, lat, _ = to_degrees.TransformPoint(*feature["geometry"].Centroid().GetPoint_2D())
        assert BERCY_LON[0] <= lon <= BERCY_LON[1] and BERCY_LAT[0] <= lat <= BERCY_LAT[1], (lon, lat)
    changed_m2 = sum(feature["area_m2"] for feature in features)
    # 1,046 changed pixels of about 8.5 × 13 m, whatever the CRS (the warps' edges differ a little).
    assert changed_m2 == pytest.approx(1046 * 112.2, rel=0.05)


def test_polygons_of_a_detection_in_us_feet_are_in_its_maps_crs(data_dir, tiny_model, tmp_path):
    """The user's case: bercy warped to UTM in US survey feet, detected with polygons."""
    images = {}
    for role in ("before", "after"):
        window = crop(data_dir / "oscd" / "bercy" / f"{role}.tif", tmp_path / f"{role}_window.tif", 50, 60, 160, 160)
        images[role] = tmp_path / f"{role}.tif"
        assert gdal.Warp(str(images[role]), str(window), dstSRS=US_FEET_UTM, xRes=30, yRes=30) is not None
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif",
                            polygons=tmp_path / "changes.gpkg")
    result = detect_changes(images["before"], images["after"], outputs,
                            DetectOptions(threshold=0.01, tile_size=128, overlap=32, device="cpu"), model=tiny_model)
    assert result.polygons > 0
    srs, _, _ = read_polygons(outputs.polygons)
    change_srs = srs_of(gdal.Open(str(outputs.change)).GetProjection())
    assert change_srs.GetLinearUnitsName() == "US survey foot"
    assert srs.IsSame(change_srs, AXES), srs.ExportToWkt()


@pytest.fixture
def levir_label_polygons(data_dir, tmp_path) -> Tuple[Path, Path]:
    """The polygons of a LEVIR-CD label (PNG, no georeference) and the label itself as the change map."""
    label = data_dir / "levir" / "test_102_0512_0000" / "label.png"
    out = tmp_path / "changes.gpkg"
    assert write_change_polygons(label, label, Grid.of(gdal.Open(str(label))), out) > 0
    return out, label


def test_polygons_without_georeference_are_in_an_undefined_cartesian_crs(levir_label_polygons):
    """They were in GeoPackage's "Undefined geographic SRS" (srs_id 0): degrees, which QGIS reprojects."""
    out, _ = levir_label_polygons
    srs, features, srs_id = read_polygons(out)
    assert srs.IsLocal() and not srs.IsGeographic()
    assert srs_id == -1  # the GeoPackage standard's "Undefined Cartesian SRS"
    for feature in features:  # in pixels, with y = -row, where QGIS draws the image
        x0, x1, y0, y1 = feature["geometry"].GetEnvelope()
        assert 0 <= x0 <= x1 <= 256 and -256 <= y0 <= y1 <= 0


@pytest.mark.qgis
@pytest.mark.parametrize("project_crs", ["EPSG:3857", "EPSG:32631", "EPSG:4326"])
def test_qgis_draws_polygons_without_georeference_on_their_change_map(levir_label_polygons, project_crs, qgis_app):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsMapSettings, QgsPointXY, QgsRasterLayer,
                           QgsVectorLayer)

    out, label = levir_label_polygons
    vector = QgsVectorLayer(f"{out}|layername=changes", "changes", "ogr")
    raster = QgsRasterLayer(str(label), "label")
    assert vector.isValid() and raster.isValid() and not raster.crs().isValid()
    settings = QgsMapSettings()
    settings.setDestinationCrs(QgsCoordinateReferenceSystem(project_crs))
    for feature in vector.getFeatures():
        centre = feature.geometry().centroid().asPoint()
        on_map = settings.layerToMapCoordinates(vector, QgsPointXY(centre))
        where_the_raster_is = settings.layerToMapCoordinates(raster, QgsPointXY(centre))
        assert (on_map.x(), on_map.y()) == pytest.approx((where_the_raster_is.x(), where_the_raster_is.y()))


def test_areas_are_measured_with_one_transformation_per_run(data_dir, tmp_path, monkeypatch):
    """Building the equal-area transformation for each polygon took 50 times as long as measuring it."""
    change, confidence = label_on(data_dir, tmp_path / "maps", "EPSG:32631")
    grid = Grid.of(gdal.Open(str(change)))
    built = []

    def counted(grid: Grid):
        built.append(grid)
        return equal_area_transform(grid)

    equal_area_transform = area.equal_area_transform
    monkeypatch.setattr(area, "equal_area_transform", counted)
    monkeypatch.setattr(polygons, "equal_area_transform", counted, raising=False)
    count = write_change_polygons(change, confidence, grid, tmp_path / "changes.gpkg")
    assert count > 1 and len(built) == 1
    monkeypatch.undo()
    # The same areas as each measured on its own.
    _, features, _ = read_polygons(tmp_path / "changes.gpkg")
    assert [f["area_m2"] for f in features] == [geometry_area_m2(f["geometry"], grid) for f in features]


@pytest.fixture(scope="module", params=["oscd", "levir"])
def low_threshold_maps(request, data_dir, tiny_model, tmp_path_factory) -> Tuple[Path, Path, Grid]:
    """Change and confidence maps of a detection on a real pair (the abudhabi crop, EPSG:4326; a LEVIR-CD
    PNG pair without georeference) at a threshold that changes 60 % of the pixels: many polygons, one
    with many holes spanning the map, as ``--threshold 0.01`` gave on an 8,192² pair."""
    if request.param == "oscd":
        pair = request.getfixturevalue("oscd_mismatch_pair")
    else:
        pair = request.getfixturevalue("levir_pair")
    folder = tmp_path_factory.mktemp(f"{request.param}_maps")
    options = dict(tile_size=128, overlap=32, device="cpu")
    probe = DetectOutputs(change=folder / "probe_change.tif", confidence=folder / "probe_confidence.tif")
    detect_changes(*pair, probe, DetectOptions(**options), model=tiny_model)
    confidence = gdal.Open(str(probe.confidence)).ReadAsArray()
    threshold = float(np.percentile(confidence[confidence >= 0], 40))
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    detect_changes(*pair, outputs, DetectOptions(threshold=threshold, **options), model=tiny_model)
    return outputs.change, outputs.confidence, Grid.of(gdal.Open(str(outputs.change)))


def pixels_of(geometry: ogr.Geometry, grid: Grid) -> np.ndarray:
    """The pixels whose centres ``geometry`` holds, rasterised on its own with GDAL over the whole grid."""
    raster = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Byte)
    raster.SetGeoTransform(map_geotransform(grid.geotransform))  # where the polygons are drawn
    source = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = source.CreateLayer("one", None, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(geometry)
    layer.CreateFeature(feature)
    gdal.RasterizeLayer(raster, [1], layer, burn_values=[1])
    return raster.GetRasterBand(1).ReadAsArray() == 1


@pytest.mark.parametrize("strip_rows", [None, 7], ids=["default_strips", "strips_of_7_rows"])
def test_each_polygon_has_the_mean_confidence_of_its_pixels(low_threshold_maps, strip_rows, tmp_path, monkeypatch):
    """The means come from one pass over strips of rows (rasterising each polygon over its bounding box
    grew with the square of a noisy map); strips of 7 rows cut the polygons' edges at many rows."""
    change_file, confidence_file, grid = low_threshold_maps
    if strip_rows is not None:
        monkeypatch.setattr(polygons, "STRIP_ROWS", strip_rows, raising=False)
    out = tmp_path / "changes.gpkg"
    count = write_change_polygons(change_file, confidence_file, grid, out)
    _, features, _ = read_polygons(out)
    assert count == len(features) > 20
    assert max(f["geometry"].GetGeometryCount() for f in features) > 10  # a polygon with many holes
    change = gdal.Open(str(change_file)).ReadAsArray()
    confidence = gdal.Open(str(confidence_file)).ReadAsArray().astype(np.float64)
    covered = np.zeros(change.shape, np.int64)
    for feature in features:
        inside = pixels_of(feature["geometry"], grid)
        covered += inside
        assert feature["area_px"] == inside.sum()  # a whole count: 48.99999999977 failed "area_px >= 49"
        assert feature["confidence"] == pytest.approx(confidence[inside].mean(), rel=1e-6, abs=1e-9)
    np.testing.assert_array_equal(covered, change == 1)  # the polygons share out the changed pixels


def test_polygons_kept_by_min_area_keep_their_confidence(low_threshold_maps, tmp_path):
    change_file, confidence_file, grid = low_threshold_maps
    write_change_polygons(change_file, confidence_file, grid, tmp_path / "all.gpkg")
    _, everything, _ = read_polygons(tmp_path / "all.gpkg")
    areas = sorted(f["area_m2"] if f["area_m2"] is not None else f["area_px"] for f in everything)
    min_area = areas[len(areas) // 2]
    kept = write_change_polygons(change_file, confidence_file, grid, tmp_path / "big.gpkg", min_area)
    _, features, _ = read_polygons(tmp_path / "big.gpkg")
    assert 0 < kept == len(features) == sum(area >= min_area for area in areas) < len(everything)
    by_shape = {f["geometry"].ExportToWkt(): f for f in everything}
    for feature in features:
        same = by_shape[feature["geometry"].ExportToWkt()]
        assert (feature["area_m2"], feature["area_px"], feature["confidence"]) == \
            (same["area_m2"], same["area_px"], same["confidence"])


def test_cancel_is_polled_in_every_strip_of_the_means(low_threshold_maps, tmp_path, monkeypatch):
    """Cancel was polled once per polygon only, so during the minute the mean of the one polygon spanning an
    8,192² map took, it did nothing. Now it is polled once per strip of rows as well, and honoured there."""
    change_file, confidence_file, grid = low_threshold_maps
    strip_rows = 16
    monkeypatch.setattr(polygons, "STRIP_ROWS", strip_rows, raising=False)
    strips = -(-grid.height // strip_rows)
    assert not (gdal.Open(str(change_file)).ReadAsArray() == 255).any()  # each polygon is kept, none dropped
    polls = []

    def never() -> bool:
        polls.append(1)
        return False
    count = write_change_polygons(change_file, confidence_file, grid, tmp_path / "all.gpkg", cancel=never)
    _, features, _ = read_polygons(tmp_path / "all.gpkg")
    spanning = max(features, key=lambda f: f["geometry"].GetArea())["geometry"].GetEnvelope()
    assert (spanning[3] - spanning[2]) / abs(grid.geotransform[5]) > 4 * strip_rows  # its pixels lie in many strips
    # As GDAL reports its polygonising's progress, once per polygon (its area), and once per strip (the means), last
    assert len(polls) > count + strips
    before_the_means = len(polls) - strips

    # Cancel clicked once every polygon's area is measured, while the means are computed, stops the work.
    polls.clear()

    def after_the_areas() -> bool:
        polls.append(1)
        return len(polls) > before_the_means
    with pytest.raises(Cancelled):
        write_change_polygons(change_file, confidence_file, grid, tmp_path / "cancelled.gpkg", cancel=after_the_areas)
    assert len(polls) == before_the_means + 1


def test_the_layers_extent_is_that_of_the_polygons_kept(data_dir, tmp_path):
    """Bercy's label warped to UTM, nodata around it, and the polygons under 200 m² left out: the
    GeoPackage kept the extent of everything polygonised, the nodata collar included, so "Zoom to
    layer" showed the whole map."""
    change, confidence = label_on(data_dir, tmp_path / "maps", "EPSG:32631")
    out = tmp_path / "changes.gpkg"
    assert write_change_polygons(change, confidence, Grid.of(gdal.Open(str(change))), out, min_area=200.0) > 0
    _, features, _ = read_polygons(out)
    envelopes = np.array([f["geometry"].GetEnvelope() for f in features])  # x min, x max, y min, y max
    union = (envelopes[:, 0].min(), envelopes[:, 1].max(), envelopes[:, 2].min(), envelopes[:, 3].max())
    data = ogr.Open(str(out))  # held: a layer outlives no data source
    stored = data.GetLayer(0).GetExtent(force=0)  # as QGIS and ogrinfo read it
    data = None
    assert stored == pytest.approx(union)


def test_cancel_stops_the_polygonising_itself(low_threshold_maps, tmp_path):
    """GDAL's Polygonize, the longest step on a noisy map, ran to its end before cancel was first polled."""
    change_file, confidence_file, grid = low_threshold_maps
    count = write_change_polygons(change_file, confidence_file, grid, tmp_path / "all.gpkg")
    with pytest.raises(Cancelled):
        write_change_polygons(change_file, confidence_file, grid, tmp_path / "cancelled.gpkg", cancel=lambda: True)
    _, features, _ = read_polygons(tmp_path / "cancelled.gpkg")
    assert count > 20 and len(features) < count / 2  # stopped while the polygons were being written
