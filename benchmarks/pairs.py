"""Generated before/after GeoTIFF pairs for the benchmark: 3-band 8-bit, tiled 256², DEFLATE, on a
UTM grid, with a smooth random texture, a slight brightening and a few changed patches. Written
strip by strip (memory does not grow with the size) and cached, so every run reads the same pair."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import numpy as np

STRIP_ROWS = 512
PIXEL_SIZE_M = 0.5  # a Google-Earth-like resolution, on a UTM grid
ORIGIN = (500000.0, 5400000.0)
EPSG = 32633


def _smooth_texture(rng: np.random.Generator, size: int, waves: int = 6):
    """Separable sums of random sine waves: per-row and per-column factors whose outer products
    give a smooth, non-repeating texture in any strip without computing the whole image."""
    freq = rng.uniform(0.002, 0.05, size=(3, waves, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(3, waves, 2))
    amp = rng.uniform(10, 35, size=(3, waves))
    axis = np.arange(size, dtype=np.float32)
    cols = np.sin(axis[None, None, :] * freq[..., 0:1] + phase[..., 0:1]).astype(np.float32)  # (3, waves, size)
    rows = np.cos(axis[None, None, :] * freq[..., 1:2] + phase[..., 1:2]).astype(np.float32)
    return amp.astype(np.float32), rows, cols


def _strip(texture, y0: int, y1: int, rng: np.random.Generator) -> np.ndarray:
    amp, rows, cols = texture
    values = np.einsum("bw,bwy,bwx->byx", amp, rows[:, :, y0:y1], cols, optimize=True) + 120.0
    values += rng.normal(0, 6, size=values.shape).astype(np.float32)  # fine grain
    return values


def _changes(size: int, rng: np.random.Generator, count: int) -> List[tuple]:
    """Square patches (x, y, side) that the after image gets brighter."""
    sides = rng.integers(size // 64, size // 16, count)
    return [(int(rng.integers(0, size - s)), int(rng.integers(0, size - s)), int(s)) for s in sides]


def generate_pair(size: int, folder: Path, seed: int = 0) -> tuple:
    """before_<size>.tif and after_<size>.tif in ``folder``, generated once and reused."""
    from osgeo import gdal, osr

    folder.mkdir(parents=True, exist_ok=True)
    before, after = folder / f"before_{size}.tif", folder / f"after_{size}.tif"
    if before.is_file() and after.is_file():
        return before, after
    rng = np.random.default_rng(seed)
    texture = _smooth_texture(rng, size)
    patches = _changes(size, rng, count=max(4, size // 256))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "PREDICTOR=2",
               "ZLEVEL=1", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    datasets = {}
    for path in (before, after):
        tmp = path.with_name(path.name + ".partial")
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, 3, gdal.GDT_Byte, options)
        ds.SetGeoTransform((ORIGIN[0], PIXEL_SIZE_M, 0, ORIGIN[1], 0, -PIXEL_SIZE_M))
        ds.SetProjection(srs.ExportToWkt())
        for index, interp in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand), start=1):
            ds.GetRasterBand(index).SetColorInterpretation(interp)
        datasets[path] = (tmp, ds)
    for y0 in range(0, size, STRIP_ROWS):
        y1 = min(y0 + STRIP_ROWS, size)
        base = _strip(texture, y0, y1, rng)
        # The after date: a little brighter overall (a pseudo-change) plus real changed patches.
        later = base * 1.05 + 4 + rng.normal(0, 3, size=base.shape).astype(np.float32)
        for x, y, side in patches:
            top, bottom = max(y, y0), min(y + side, y1)
            if top < bottom:
                later[:, top - y0:bottom - y0, x:x + side] = 230 - 0.3 * later[:, top - y0:bottom - y0, x:x + side]
        for path, values in ((before, base), (after, later)):
            pixels = np.clip(values, 0, 255).astype(np.uint8)
            ds = datasets[path][1]
            for band in range(3):
                ds.GetRasterBand(band + 1).WriteArray(pixels[band], 0, y0)
    for path, (tmp, ds) in datasets.items():
        ds.FlushCache()
        ds = None
        datasets[path] = None
        os.replace(tmp, path)
    return before, after
