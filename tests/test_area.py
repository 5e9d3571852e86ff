"""Ground pixel size in metres, which chooses a model's threshold for coarse imagery, and ground
areas of pixels and polygons in geographic and projected CRSs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from core_test_helpers import crop
from deepcl_core.area import file_pixel_size, geometry_area_m2, ground_pixel_size, pixel_area_by_row
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.grid import Grid


def wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def test_projected_grid_in_metres():
    # On UTM's central meridian grid metres are 0.9996 ground metres: a 0.5 m pixel is 0.5002 m.
    grid = Grid(100, 100, (500000, 0.5, 0, 5e6, 0, -0.5), wkt(32631))
    assert ground_pixel_size(grid) == pytest.approx(0.5 / 0.9996, rel=1e-5)


def test_geographic_grid_is_measured_on_the_ground():
    # 1/10000 degree at the equator: about 11.1 m east-west and 11.1 m north-south.
    grid = Grid(100, 100, (10.0, 1e-4, 0, 0.005, 0, -1e-4), wkt(4326))
    assert ground_pixel_size(grid) == pytest.approx(11.1, abs=0.1)
    # At 60° N a degree of longitude is half as long: the square of equal area has side about 7.9 m.
    north = Grid(100, 100, (10.0, 1e-4, 0, 60.005, 0, -1e-4), wkt(4326))
    assert ground_pixel_size(north) == pytest.approx(7.86, abs=0.05)


def test_without_georeference_or_file_there_is_no_pixel_size(levir_pair, tmp_path):
    assert ground_pixel_size(Grid(256, 256, (0, 1, 0, 0, 0, 1), "")) is None
    assert file_pixel_size(str(levir_pair[0])) is None
    assert file_pixel_size(str(tmp_path / "missing.tif")) is None


def test_no_pixel_size_of_a_file_gdal_cannot_read_while_the_host_has_gdal_exceptions_on(tmp_path, gdal_exceptions_on):
    """The panel asks it of every before layer: with GDAL's exceptions on (another plugin, GDAL 4's
    default) an unreadable file raised a bare RuntimeError into QGIS."""
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    assert file_pixel_size(str(text)) is None
    assert file_pixel_size(str(tmp_path / "missing.tif")) is None
    assert gdal.GetUseExceptions()  # as the host left them


@pytest.fixture(scope="module")
def bercy_mercator(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A 256×256 crop of OSCD bercy (Paris, 48.86° N, EPSG:4326), and the same pair warped to Web
    Mercator as gdalwarp does by default (square 16.67-unit pixels, 199×302) and keeping 256×256."""
    folder = tmp_path_factory.mktemp("bercy_mercator")
    files = {}
    for role in ("before", "after"):
        files[role] = crop(data_dir / "oscd" / "bercy" / f"{role}.tif", folder / f"{role}.tif", 50, 60, 256, 256)
        for name, size in (("mercator", {}), ("mercator_256", dict(width=256, height=256))):
            path = folder / f"{role}_{name}.tif"
            assert gdal.Warp(str(path), str(files[role]), dstSRS="EPSG:3857", **size) is not None
            files[f"{role}_{name}"] = path
    return files


def test_web_mercator_detection_reports_the_geographic_original_s_areas(bercy_mercator, tiny_model, tmp_path):
    # The user's case: Web Mercator's nominal 277.8 m² pixels made the valid area 16.7 km² instead of 7.24.
    results = {}
    for name in ("", "_mercator"):
        folder = tmp_path / (name or "geographic")
        folder.mkdir()
        outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
        results[name] = detect_changes(bercy_mercator["before" + name], bercy_mercator["after" + name], outputs,
                                       DetectOptions(tile_size=128, overlap=32, device="cpu"), model=tiny_model)
    geographic, mercator = results[""], results["_mercator"]
    assert geographic.valid_area_m2 == pytest.approx(7.24e6, rel=0.01)
    assert mercator.valid_area_m2 == pytest.approx(geographic.valid_area_m2, rel=0.01)
    if mercator.changed_pixels:  # the changed area is counted with the same pixel areas
        assert mercator.changed_area_m2 / mercator.changed_pixels == pytest.approx(
            mercator.valid_area_m2 / mercator.valid_pixels, rel=0.01)


def test_web_mercator_pixel_size_is_measured_on_the_ground(bercy_mercator):
    original = file_pixel_size(str(bercy_mercator["before"]))
    assert original == pytest.approx(10.51, abs=0.01)
    # The same 256×256 pixels over the same ground, in Web Mercator.
    assert file_pixel_size(str(bercy_mercator["before_mercator_256"])) == pytest.approx(original, rel=0.01)
    # gdalwarp's square pixels: 16.67 units of Web Mercator are 16.67·cos(48.86°) = 10.97 m at Paris.
    assert file_pixel_size(str(bercy_mercator["before_mercator"])) == pytest.approx(10.97, rel=0.005)


def test_fine_web_mercator_imagery_is_not_taken_for_sentinel_2(tiny_model):
    # 7 units of Web Mercator at 48.86° N are 4.6 m on the ground: below a model's 5 m coarse class.
    grid = Grid(512, 512, (263285.0, 7.0, 0, 6251080.0, 0, -7.0), wkt(3857))
    assert ground_pixel_size(grid) == pytest.approx(4.61, abs=0.02)
    model = replace(tiny_model, threshold=0.6, thresholds_by_pixel_size=((5.0, 0.45),),
                    input_scales_by_pixel_size=((5.0, 2),))
    assert model.threshold_for(ground_pixel_size(grid)) == 0.6
    assert model.input_scale_for(ground_pixel_size(grid)) == 1


def test_projected_crs_in_feet_is_measured_on_the_ground():
    # Mercator in US survey feet at 48.86° N: 10 ft = 3.048 m of the projection, 2.01 m on the ground.
    srs = osr.SpatialReference()
    srs.ImportFromProj4("+proj=merc +datum=WGS84 +units=us-ft +no_defs")
    grid = Grid(100, 100, (863793.0, 10.0, 0, 20508740.0, 0, -10.0), srs.ExportToWkt())
    assert ground_pixel_size(grid) == pytest.approx(10 * 1200 / 3937 * np.cos(np.radians(48.86)), rel=0.005)


def test_a_row_s_area_is_the_mean_of_its_pixels_across_a_utm_zone():
    # UTM's scale grows away from the central meridian (x = 500 km): across a whole zone the mean
    # pixel is 0.09 % smaller on the ground than the one in the middle.
    x0, size, width = 170000.0, 10.0, 66000
    grid = Grid(width, 3, (x0, size, 0, 5e6, 0, -size), wkt(32631))
    columns = range(0, width, 100)
    each = [pixel_area_by_row(Grid(1, 3, (x0 + size * c, size, 0, 5e6, 0, -size), grid.crs_wkt))[0] for c in columns]
    assert pixel_area_by_row(grid)[0] == pytest.approx(np.mean(each), rel=1e-5)
    assert each[width // 200] == pytest.approx(size ** 2 / 0.9996 ** 2, rel=1e-5)


def test_polygon_areas_in_web_mercator_are_ground_areas(bercy_mercator):
    # The footprint of the crop, in its own CRS, has the same ground area in either.
    areas = []
    for name in ("before", "before_mercator"):
        grid = Grid.of(gdal.Open(str(bercy_mercator[name])))
        x0, y0, x1, y1 = grid.bounds()
        footprint = ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))")
        areas.append(geometry_area_m2(footprint, grid))
    assert areas[0] == pytest.approx(7.24e6, rel=0.01)
    assert areas[1] == pytest.approx(areas[0], rel=0.01)


def test_rows_past_a_pole_keep_their_nominal_area():
    """A sinusoidal tile at the pole (MODIS h00v00): PROJ cannot measure its first row's corners,
    which would turn the run's totals into NaN."""
    srs = osr.SpatialReference()
    srs.SetFromUserInput("ESRI:53008")
    grid = Grid(2400, 2400, (-20015109.354, 463.3127, 0, 10007554.677, 0, -463.3127), srs.ExportToWkt())
    areas = pixel_area_by_row(grid)
    assert np.isfinite(areas).all() and areas[0] == pytest.approx(463.3127 ** 2)
