"""A/B of one lever, freed memory kept in the process for reuse (:mod:`deepcl_core.heap`), end to
end and for the network alone (not a timed test).

    python -m benchmarks.heap_lever [--sizes 2048] [--rounds 3] [--device cpu]

Each run is a child process of :mod:`benchmarks.runs` (the setting is process-wide, so on and off
never share one), on the generated pair of ``make bench``; detection runs in the main thread, as
the command line does, and in a worker thread, as QGIS does. On and off alternate round after round;
the medians are printed with each run's peak resident memory.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import List, Optional

from benchmarks.runs import ROOT, measure, parse_args as run_settings

RUNS = (("pipeline", False), ("pipeline", True), ("compute", False))  # (run, in a worker thread)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heap_lever", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048", help="comma-separated image sides (default 2048)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    settings = run_settings(["--run", "pipeline", "--size", "0", "--cache", str(args.cache)])  # detection's defaults
    print("| size (px) | run | allocation | seconds (median) | megapixels/s | page faults (median, whole run) | "
          "peak RSS (MB) |\n|---|---|---|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        records = {(run, thread, plain): [] for run, thread in RUNS for plain in (False, True)}
        for _ in range(args.rounds):
            for (run, thread, plain), found in records.items():
                settings.plain_allocation, settings.in_thread = plain, thread
                found.append(measure(run, size, args.device, settings))
        for (run, thread, plain), found in records.items():
            seconds = statistics.median(r["seconds"] for r in found)
            name = f"{run}{', worker thread' if thread else ''}"
            how = "glibc's defaults" if plain else "deepcl_core.heap (as detection runs)"
            faults = statistics.median(r["minor_faults"] for r in found)
            print(f"| {size:,}² | {name} | {how} | {seconds:.2f} | {size * size / 1e6 / seconds:.3f} | "
                  f"{faults:,.0f} | {max(r['peak_rss_mb'] for r in found):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
