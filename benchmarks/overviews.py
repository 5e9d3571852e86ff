"""What overviews in the output maps cost: detection with and without them, end to end, and the
overviews alone with the maps' compression or with GDAL's default for them.

    python -m benchmarks.overviews [--size 8192] [--rounds 1] [--only "without,with"]

Each variant runs ``detect_changes`` file to file on the CPU on the generated benchmark pair; the
overviews' share is timed from the "building overviews" progress message to the end. Variants run
interleaved (``benchmarks.pipeline_levers.interleaved``); medians are printed, with the output
files' sizes. Indicative, not a timed test.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional
from unittest import mock

import deepcl_core.outputs as outputs
from benchmarks.pipeline_levers import interleaved, lever_parser, parsed_with_pair, selected
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

VARIANTS = {  # name → (overviews, with the maps' compression)
    "without overviews": (False, True),
    "with overviews": (True, True),
    "with overviews in GDAL's default compression (before)": (True, False),
}


def variant(before: Path, after: Path, bundle, folder: Path, overviews: bool, compressed: bool,
            record: Dict[str, List[float]]) -> Callable[[], float]:
    """A run that returns its seconds and appends to ``record`` the overviews' seconds and the
    output files' megabytes."""
    def run() -> float:
        marks: Dict[str, float] = {}

        def progress(fraction: float, message: str) -> None:
            if message == "building overviews":
                marks["overviews"] = time.perf_counter()
        with ExitStack() as stack, tempfile.TemporaryDirectory(dir=folder) as out:
            if not compressed:  # the thread-local *_OVERVIEW settings left out
                stack.enter_context(mock.patch.object(outputs, "thread_config", lambda settings: nullcontext()))
            files = DetectOutputs(Path(out) / "change.tif", Path(out) / "confidence.tif")
            started = time.perf_counter()
            detect_changes(before, after, files, DetectOptions(device="cpu", overviews=overviews), model=bundle,
                           progress=progress)
            ended = time.perf_counter()
            record.setdefault("overviews", []).append(ended - marks.get("overviews", ended))
            record.setdefault("megabytes", []).append(sum(p.stat().st_size for p in files.rasters()) / 1e6)
            return ended - started
    return run


def main(argv: Optional[List[str]] = None) -> int:
    parser = lever_parser("python -m benchmarks.overviews", __doc__.split("\n\n")[0], size=8192, rounds=1)
    args, before, after, bundle, what = parsed_with_pair(parser, argv)
    records: Dict[str, Dict[str, List[float]]] = {name: {} for name in VARIANTS}
    runs = {name: variant(before, after, bundle, args.cache, *settings, records[name])
            for name, settings in selected(VARIANTS, args.only, parser).items()}
    warm_up = variant(before, after, bundle, args.cache, False, True, {})  # kernels, allocator, file cache
    seconds = interleaved(runs, args.rounds, warm_up=warm_up)
    print(f"{args.size}² pair, {what}; median of {args.rounds} interleaved rounds, CPU\n")
    print("| variant | seconds end to end | of which overviews | change + confidence files (MB) |\n"
          "|---|---:|---:|---:|")
    for name, times in seconds.items():
        record = records[name]
        print(f"| {name} | {statistics.median(times):.1f} | {statistics.median(record['overviews']):.2f} | "
              f"{statistics.median(record['megabytes']):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
