"""A/B of the two levers that act through memory, end to end and for the network alone (not a
timed test): freed memory kept in the process for reuse (:mod:`deepcl_core.heap`), and the encoder
taking the two dates one after the other instead of in one batch (``DeepCLNet.dates_in_one_batch``).

    python -m benchmarks.memory_levers [--sizes 2048] [--rounds 3] [--device cpu]

Each run is a child process of :mod:`benchmarks.runs` (the heap setting is process-wide, so on and
off never share one), on the generated pair of ``make bench``; detection runs in the main thread,
as the command line does, and in a worker thread, as QGIS does. The variants alternate round after
round; the medians are printed with each run's page faults and peak resident memory.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path
from typing import List, Optional

from benchmarks.runs import ROOT, measure, parse_args as run_settings

RUNS = (("pipeline", False), ("pipeline", True), ("compute", False))  # (run, in a worker thread)
ALLOCATION = {False: "deepcl_core.heap (as detection runs)", True: "glibc's defaults"}  # by plain_allocation
ENCODER = {False: "dates one after the other (as detection runs)", True: "dates in one batch"}  # by dates_in_one_batch


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_levers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048", help="comma-separated image sides (default 2048)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    settings = run_settings(["--run", "pipeline", "--size", "0", "--cache", str(args.cache)])  # detection's defaults
    print("| size (px) | run | allocation | encoder | seconds (median) | megapixels/s "
          "| page faults (median, whole run) | peak RSS (MiB) |\n|---|---|---|---|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        variants = list(itertools.product(RUNS, (False, True), (False, True)))
        records = {variant: [] for variant in variants}
        for index in range(args.rounds):
            for variant in variants if index % 2 == 0 else reversed(variants):
                (run, settings.in_thread), settings.plain_allocation, settings.dates_in_one_batch = variant
                records[variant].append(measure(run, size, args.device, settings))
        for ((run, thread), plain, together), found in records.items():
            seconds = statistics.median(r["seconds"] for r in found)
            faults = statistics.median(r["minor_faults"] for r in found)
            print(f"| {size:,}² | {run}{', worker thread' if thread else ''} | {ALLOCATION[plain]} | "
                  f"{ENCODER[together]} | {seconds:.2f} | {size * size / 1e6 / seconds:.3f} | {faults:,.0f} | "
                  f"{max(r['peak_rss_mb'] for r in found):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
