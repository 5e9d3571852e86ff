"""Reading JPEG 2000 inputs, as Sentinel-2 products and many orthophotos come: the generated
benchmark pair as GeoTIFF (256² tiles) and as JPEG 2000 (1024² blocks, as in Sentinel-2 products),
read, normalised, blended and written by detection with the network replaced by a stand-in that
costs nothing (the *I/O alone* run of ``make bench``), in turn as on the CPU, or with
``--background`` in the reader and writer threads used beside a GPU.

    python -m benchmarks.jpeg2000 [--size 8192] [--rounds 2] [--background]

Printed per format: one whole image decoded once (what any reader must pay), the I/O-alone run and
the image statistics' share of it. Variants run interleaved; medians are printed. Indicative, not a
timed test.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from unittest import mock

from osgeo import gdal

import deepcl_core.detect as detect
from benchmarks.pipeline_levers import interleaved, lever_parser, parsed_with_pair
from benchmarks.runs import network_stand_in
from deepcl_core import network_on_tiles

JPEG2000_OPTIONS = ["BLOCKXSIZE=1024", "BLOCKYSIZE=1024", "QUALITY=25", "REVERSIBLE=NO", "RESOLUTIONS=5"]


def as_jpeg2000(path: Path) -> Path:
    """``path`` as a lossy JPEG 2000 beside it, made once and reused."""
    target = path.with_suffix(".jp2")
    if not target.is_file():
        partial = target.with_name(target.name + ".partial")
        written = gdal.Translate(str(partial), str(path), format="JP2OpenJPEG", creationOptions=JPEG2000_OPTIONS)
        if written is None:
            raise SystemExit(f"benchmark: GDAL could not write {partial} (JP2OpenJPEG driver)")
        written = None  # closed: the file is complete
        partial.rename(target)
        sidecar = partial.with_name(partial.name + ".aux.xml")  # what JPEG 2000 cannot hold (colours)
        if sidecar.is_file():
            sidecar.rename(target.with_name(target.name + ".aux.xml"))
    return target


def whole_decode_seconds(path: Path) -> float:
    dataset = gdal.Open(str(path))
    started = time.perf_counter()
    dataset.ReadAsArray()
    return time.perf_counter() - started


def io_alone(before: Path, after: Path, bundle, folder: Path, statistics_seconds: List[float],
             background: bool = False) -> Callable[[], float]:
    """A detection of the pair with a network that costs nothing, reading in turn with it or in
    ``background`` threads; appends the statistics' seconds to ``statistics_seconds``."""
    measured = detect._statistics_and_network

    def timed_statistics(*args, **kwargs):
        started = time.perf_counter()
        try:
            return measured(*args, **kwargs)
        finally:
            statistics_seconds.append(time.perf_counter() - started)

    def run() -> float:
        with tempfile.TemporaryDirectory(dir=folder) as out, \
                mock.patch.object(network_on_tiles, "launch_network", network_stand_in), \
                mock.patch.object(detect, "_statistics_and_network", timed_statistics):
            outputs = detect.DetectOutputs(Path(out) / "change.tif", Path(out) / "confidence.tif")
            started = time.perf_counter()
            detect.detect_changes(before, after, outputs, detect.DetectOptions(device="cpu", overlap_io=background),
                                  model=bundle)
            return time.perf_counter() - started
    return run


def main(argv: Optional[List[str]] = None) -> int:
    parser = lever_parser("python -m benchmarks.jpeg2000", __doc__.split("\n\n")[0], size=8192, rounds=2)
    parser.add_argument("--background", action="store_true", help="read and write in the threads used beside a GPU")
    args, before, after, bundle, what = parsed_with_pair(parser, argv)
    pairs: Dict[str, Tuple[Path, Path]] = {"GeoTIFF, 256² tiles, DEFLATE": (before, after),
                                           "JPEG 2000, 1024² blocks": (as_jpeg2000(before), as_jpeg2000(after))}
    stats: Dict[str, List[float]] = {name: [] for name in pairs}
    runs = {name: io_alone(*pair, bundle, args.cache, stats[name], args.background) for name, pair in pairs.items()}
    seconds = interleaved(runs, args.rounds, warm_up=io_alone(before, after, bundle, args.cache, []))
    how = "in background threads, as beside a GPU" if args.background else "in turn, as on the CPU"
    print(f"{args.size}² pair, 3 bands of 8 bits, {what}; I/O alone {how}, median of {args.rounds} "
          f"interleaved rounds\n")
    print("| input | one image decoded whole (s) | I/O alone (s) | of which image statistics (s) |")
    print("|---|---:|---:|---:|")
    for name, pair in pairs.items():
        print(f"| {name} | {whole_decode_seconds(pair[0]):.2f} | {statistics.median(seconds[name]):.2f} | "
              f"{statistics.median(stats[name][-args.rounds:]):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
