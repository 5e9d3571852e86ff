"""Ground pixel size in metres, which chooses a model's threshold for coarse imagery."""
from __future__ import annotations

import pytest
from osgeo import osr

from deepcl_core.area import file_pixel_size, ground_pixel_size
from deepcl_core.raster_io import Grid


def wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def test_projected_grid_in_metres():
    assert ground_pixel_size(Grid(100, 100, (500000, 0.5, 0, 5e6, 0, -0.5), wkt(32631))) == pytest.approx(0.5)


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
