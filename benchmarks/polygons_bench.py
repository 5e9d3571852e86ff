"""The polygon step (``write_change_polygons``) at a few sizes, to see how its time and memory scale:
indicative figures, not a timed test.

    python -m benchmarks.polygons_bench [--sizes 1024,2048,4096] [--module PATH]

The maps are generated once per size and cached: a noisy confidence map (box-blurred Gaussian noise
on a UTM grid) and its change map, 60 % of the pixels changed, as a low threshold (``--threshold
0.01``) left a real detection: one polygon spanning the map with many holes, and many small ones.
Each size runs in a child process of its own, whose peak resident memory is measured
(:mod:`benchmarks.peak_rss`, in MiB); "added" is that peak less the child's before the step.
Figures and their command: ``docs/benchmarks_polygons.md``. ``--module``
runs another copy of ``deepcl_core/polygons.py`` (e.g. the original, from ``git show
HEAD:deepcl_core/polygons.py``) in place of the package's.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Tuple

import numpy as np

from benchmarks.peak_rss import run_measuring_peak

ROOT = Path(__file__).resolve().parents[1]
PIXEL_SIZE_M, ORIGIN, EPSG = 0.5, (500000.0, 5400000.0), 32633  # as benchmarks.pairs
BLUR = 4  # box radius in pixels: specks and holes of a few pixels to a few tens, as the real map had
CHANGED = 0.6
OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "ZLEVEL=1"]


def _box_sums(noise: np.ndarray, radius: int) -> np.ndarray:
    """Sums over (2 radius + 1)² boxes of ``noise``, which has ``radius`` more pixels on each side."""
    side = 2 * radius + 1
    for axis in (0, 1):
        sums = np.cumsum(noise, axis=axis, dtype=np.float64)
        ahead = np.take(sums, np.arange(side - 1, sums.shape[axis]), axis=axis)
        behind = np.take(sums, np.arange(-1, sums.shape[axis] - side), axis=axis)
        behind[(slice(None),) * axis + (0,)] = 0  # the first box starts at the edge
        noise = (ahead - behind).astype(np.float32)
    return noise


def generate_maps(size: int, folder: Path, seed: int = 0) -> Tuple[Path, Path]:
    """change_<size>.tif (Byte: 1 changed, 0 not, nodata 255) and confidence_<size>.tif (Float32 in
    0..1, nodata -1) in ``folder``, tiled as detection writes them; generated once and reused."""
    from osgeo import gdal, osr

    folder.mkdir(parents=True, exist_ok=True)
    change, confidence = folder / f"polygons_change_{size}.tif", folder / f"polygons_confidence_{size}.tif"
    if change.is_file() and confidence.is_file():
        return change, confidence
    noise = np.random.default_rng(seed).standard_normal((size + 2 * BLUR,) * 2, dtype=np.float32)
    field = _box_sums(noise, BLUR) / (2 * BLUR + 1)  # unit variance again
    values = (1 / (1 + np.exp(-field))).astype(np.float32)
    threshold = float(np.quantile(values[::7, ::7], 1 - CHANGED))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    for path, array, kind, nodata in ((confidence, values, gdal.GDT_Float32, -1),
                                      (change, (values >= threshold).astype(np.uint8), gdal.GDT_Byte, 255)):
        partial = path.with_name(path.name + ".partial")
        dataset = gdal.GetDriverByName("GTiff").Create(str(partial), size, size, 1, kind, OPTIONS)
        dataset.SetGeoTransform((ORIGIN[0], PIXEL_SIZE_M, 0, ORIGIN[1], 0, -PIXEL_SIZE_M))
        dataset.SetProjection(srs.ExportToWkt())
        dataset.GetRasterBand(1).SetNoDataValue(nodata)
        dataset.GetRasterBand(1).WriteArray(array)
        dataset = None
        partial.replace(path)
    return change, confidence


def _polygons_module(path: Optional[Path]) -> ModuleType:
    if path is None:
        from deepcl_core import polygons
        return polygons
    # A sibling of deepcl_core.polygons, so that its relative imports find the package's modules.
    spec = importlib.util.spec_from_file_location("deepcl_core._benchmarked_polygons", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(change: Path, confidence: Path, report: Path, module_path: Optional[Path]) -> None:
    """One run of the step, in this process: its figures as JSON into ``report``."""
    from osgeo import gdal, ogr

    from deepcl_core.grid import Grid

    polygons = _polygons_module(module_path)
    grid = Grid.of(gdal.Open(str(confidence)))
    polygonize, spent = gdal.Polygonize, []

    def timed(*args, **kwargs):  # GDAL's own share, the same in any version of the module
        started = time.perf_counter()
        try:
            return polygonize(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)
    gdal.Polygonize = timed
    out = change.with_name(f"polygons_{grid.width}.gpkg")
    out.unlink(missing_ok=True)
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    count = polygons.write_change_polygons(change, confidence, grid, out)
    seconds = time.perf_counter() - started
    data = ogr.Open(str(out))
    holes = max((feature.GetGeometryRef().GetGeometryCount() - 1 for feature in data.GetLayer(0)), default=0)
    data = None
    out.unlink()
    report.write_text(json.dumps({"polygons": count, "holes": holes, "seconds": seconds, "polygonize": sum(spent),
                                  "before_mb": before_mb}))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.polygons_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,2048,4096", help="comma-separated map sides (default 1024,2048,4096)")
    parser.add_argument("--module", type=Path, help="another copy of deepcl_core/polygons.py to run instead")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--child", nargs=3, type=Path, metavar=("CHANGE", "CONFIDENCE", "REPORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.module)
        return 0
    print(f"polygons of a generated noisy map, {CHANGED:.0%} changed; module: "
          f"{args.module or 'deepcl_core/polygons.py'}\n")
    print("| size (px) | polygons | holes of the largest | seconds | of which Polygonize | rest per megapixel (s) "
          "| peak RSS (MiB) | added by the step (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        change, confidence = generate_maps(size, args.cache)
        with tempfile.TemporaryDirectory(prefix="polygons-bench-") as folder:
            report = Path(folder) / "figures.json"
            command = [sys.executable, "-m", "benchmarks.polygons_bench", "--child", str(change), str(confidence),
                       str(report), *(["--module", str(args.module.resolve())] if args.module else [])]
            usage = run_measuring_peak(command, cwd=ROOT)
            if usage.status != 0 or not report.is_file():
                raise SystemExit(f"the run on {size}² failed (exit status {usage.status})")
            found = json.loads(report.read_text())
        rest = (found["seconds"] - found["polygonize"]) / (size * size / 1e6)
        print(f"| {size:,}² | {found['polygons']:,} | {found['holes']:,} | {found['seconds']:.2f} | "
              f"{found['polygonize']:.2f} | {rest:.3f} | {usage.peak_rss_mb:.0f} | "
              f"{usage.peak_rss_mb - found['before_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
