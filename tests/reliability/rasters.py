"""Small synthetic rasters for the reliability tests: a good before/after pair on a UTM grid and
builders for each way an input can be wrong. Tiny on purpose: every case runs in well under a second."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, gdal_array, osr

UTM_33N = 32633
ORIGIN = (500000.0, 4000000.0)
PIXEL = 10.0
SIZE = (50, 40)  # width, height of the good pair


def geotransform(x0: float = ORIGIN[0], y0: float = ORIGIN[1], pixel: float = PIXEL) -> Tuple[float, ...]:
    return (x0, pixel, 0.0, y0, 0.0, -pixel)


def write(path: Path, array: np.ndarray, transform: Optional[Sequence[float]] = None,
          epsg: Optional[int] = UTM_33N, nodata: Optional[float] = None) -> Path:
    """A GeoTIFF of ``array`` (bands, h, w) with its data type; no georeference when ``transform``
    and ``epsg`` are None."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else array
    code = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0], code)
    if transform is not None:
        dataset.SetGeoTransform(tuple(transform))
    if epsg is not None:
        dataset.SetProjection(osr.SpatialReference(wkt=_wkt(epsg)).ExportToWkt())
    for index, plane in enumerate(array, start=1):
        band = dataset.GetRasterBand(index)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(plane)
    dataset = None
    return path


def _wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def noise(shape: Tuple[int, ...], seed: int, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)
    return rng.integers(0, min(np.iinfo(dtype).max, 4000), shape, endpoint=True).astype(dtype)


def good_image(path: Path, seed: int, transform: Optional[Sequence[float]] = None) -> Path:
    return write(path, noise((3, SIZE[1], SIZE[0]), seed), transform or geotransform())


def truncated_copy(source: Path, target: Path) -> Path:
    """The first half of a GeoTIFF: the header opens, the pixels are gone."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def in_other_crs(source: Path, target: Path, epsg: int, shift: Tuple[float, float] = (0.0, 0.0)) -> Path:
    """``source`` warped to ``epsg`` (pixels resampled), then moved by ``shift`` in that CRS's units."""
    warped = gdal.Warp(str(target), str(source), dstSRS=f"EPSG:{epsg}", resampleAlg="near")
    x0, dx, rx, y0, ry, dy = warped.GetGeoTransform()
    warped.SetGeoTransform((x0 + shift[0], dx, rx, y0 + shift[1], ry, dy))
    warped = None
    return target


def grid_of(path: Path) -> Tuple[int, int, Tuple[float, ...], str]:
    dataset = gdal.Open(str(path))
    return dataset.RasterXSize, dataset.RasterYSize, dataset.GetGeoTransform(), dataset.GetProjection()


def read_band(path: Path) -> np.ndarray:
    dataset = gdal.Open(str(path))  # held: a band outliving its dataset crashes GDAL's bindings
    return dataset.GetRasterBand(1).ReadAsArray()


def assert_on_grid(output: Path, before: Path) -> None:
    """``output`` has the before image's size, geotransform and CRS."""
    width, height, transform, wkt = grid_of(before)
    out_width, out_height, out_transform, out_wkt = grid_of(output)
    assert (out_width, out_height) == (width, height)
    assert np.allclose(out_transform, transform, rtol=1e-12)
    if wkt:
        assert osr.SpatialReference(wkt=out_wkt).IsSame(osr.SpatialReference(wkt=wkt))
    else:
        assert out_wkt == ""


def files_in(folder: Path) -> List[str]:
    """Everything in ``folder``, hidden partial files included."""
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@dataclass
class Case:
    """One way the images can be wrong: which image it replaces and the words the error must hold."""

    builder: Callable[[Path, Path, Path], Path]  # (folder, good before, good after) -> the bad image
    role: str  # "before" or "after"
    words: Sequence[str]


def _folder(folder: Path, before: Path, after: Path) -> Path:
    (folder / "a_folder.tif").mkdir()
    return folder / "a_folder.tif"


def _zero_byte(folder: Path, before: Path, after: Path) -> Path:
    (folder / "zero.tif").touch()
    return folder / "zero.tif"


def _text(folder: Path, before: Path, after: Path) -> Path:
    (folder / "notes.tif").write_text("these are not pixels\n")
    return folder / "notes.tif"


def _all_nodata(folder: Path, before: Path, after: Path) -> Path:
    return write(folder / "nodata.tif", np.zeros((3, SIZE[1], SIZE[0]), np.uint8), geotransform(), nodata=0)


def _not_georeferenced(folder: Path, before: Path, after: Path) -> Path:
    return write(folder / "plain.tif", noise((3, SIZE[1], SIZE[0]), 5), None, epsg=None)


def _two_bands(folder: Path, before: Path, after: Path) -> Path:
    return write(folder / "two_bands.tif", noise((2, SIZE[1], SIZE[0]), 6), geotransform())


# Cases that must end with a clear error, shared by the command-line and the Processing tests.
# Existing tests already cover some of them for one front end: see docs/reliability.md.
BAD_IMAGES: Dict[str, Case] = {
    "missing_file": Case(lambda f, b, a: f / "missing.tif", "after", ["not found"]),
    "directory": Case(_folder, "after", ["folder"]),
    "not_a_raster": Case(_text, "after", ["not a raster"]),
    "truncated_geotiff": Case(lambda f, b, a: truncated_copy(a, f / "truncated.tif"), "after", ["cannot read"]),
    "zero_byte_file": Case(_zero_byte, "after", ["empty"]),
    "no_overlap_same_crs": Case(lambda f, b, a: good_image(f / "far.tif", 2, geotransform(ORIGIN[0] + 5000)),
                                "after", ["do not overlap"]),
    "no_overlap_other_crs": Case(lambda f, b, a: in_other_crs(a, f / "mercator.tif", 3857, (20000.0, 0.0)),
                                 "after", ["do not overlap"]),
    "only_before_georeferenced": Case(_not_georeferenced, "after", ["only the before image is georeferenced"]),
    "fewer_bands_than_the_model": Case(_two_bands, "after", ["3", "has 2"]),
    "all_nodata": Case(_all_nodata, "after", ["no valid pixel"]),
}
