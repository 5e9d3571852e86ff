"""The TIFF predictor for the float output maps (confidence, distance): time to compress and write,
time to read back, and file size, for the bundled model's confidence on real pairs. Each map is
repeated side by side up to 2,048² so that every variant writes the same 4-megapixel raster in the
output files' layout (tiles of 256², ZSTD level 1, one thread). Not a timed test.

    python -m benchmarks.float_predictor PAIR_FOLDER...
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from osgeo import gdal

from benchmarks.compute import benchmark_bundle
from deepcl_core.model.inference import prepare_for_inference
from deepcl_core.outputs import DEFAULT_COMPRESSION, FLOAT_NODATA, creation_options
from deepcl_core.training.inference import predict_as_detected

SIDE = 2048
PREDICTORS = {"2 (horizontal differencing)": "2", "3 (floating point)": "3"}
ROUNDS = 3


def tiled_up(confidence: np.ndarray, side: int = SIDE) -> np.ndarray:
    """``confidence`` repeated side by side and cropped to ``side``²."""
    height, width = confidence.shape
    return np.ascontiguousarray(np.tile(confidence, (-(-side // height), -(-side // width)))[:side, :side])


def write_and_read(values: np.ndarray, predictor: str) -> Tuple[float, float, int]:
    """Best-of-``ROUNDS`` seconds to write ``values`` as the output files are written and to read
    them back, and the file's bytes; the read must give back every value."""
    path = f"/vsimem/float_predictor_{predictor}.tif"
    options = creation_options(DEFAULT_COMPRESSION, predictor)
    writes, reads = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        dataset = gdal.GetDriverByName("GTiff").Create(path, values.shape[1], values.shape[0], 1, gdal.GDT_Float32,
                                                       options)
        dataset.GetRasterBand(1).SetNoDataValue(FLOAT_NODATA)
        dataset.GetRasterBand(1).WriteArray(values)
        dataset = None  # closing flushes and compresses the last blocks
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        back = gdal.Open(path).ReadAsArray()
        reads.append(time.perf_counter() - started)
        if not np.array_equal(back, values):
            raise SystemExit(f"predictor {predictor} did not give back the values written")
    size = gdal.VSIStatL(path).size
    gdal.Unlink(path)
    return min(writes), min(reads), size


def main(argv: Optional[List[str]] = None) -> int:
    from deepcl_core.training.pairs import find_pairs, load_pairs

    parser = argparse.ArgumentParser(prog="python -m benchmarks.float_predictor", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args(argv)
    gdal.UseExceptions()
    bundle, what = benchmark_bundle()
    network = prepare_for_inference(bundle.build(), torch.device("cpu"))
    pairs = load_pairs(find_pairs(args.folders), bundle.bands, bundle.normalization)
    totals: Dict[str, List[float]] = {name: [0.0, 0.0, 0.0] for name in PREDICTORS}
    print(f"{what}; each confidence map repeated to {SIDE}², ZSTD level 1, best of {ROUNDS}\n")
    print("| pair | predictor | write (ms) | read (ms) | size (MB) |\n|---|---|---:|---:|---:|")
    for pair in pairs:
        confidence = predict_as_detected(network, bundle, pair, torch.device("cpu"), tile=768)
        values = tiled_up(np.where(pair.valid, confidence, FLOAT_NODATA).astype(np.float32))
        for name, predictor in PREDICTORS.items():
            written, read, size = write_and_read(values, predictor)
            for k, figure in enumerate((written, read, size)):
                totals[name][k] += figure
            print(f"| {pair.files.group}/{pair.name} | {name} | {1000 * written:.1f} | {1000 * read:.1f} | "
                  f"{size / 1e6:.2f} |")
    (write_2, read_2, size_2), (write_3, read_3, size_3) = totals.values()
    print(f"\nAll pairs: predictor 2 writes in {write_2 / write_3:.2f}× and reads in {read_2 / read_3:.2f}× the time "
          f"of predictor 3; its files are {100 * (size_2 / size_3 - 1):+.1f} % in size.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
