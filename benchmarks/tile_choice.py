"""The tile-size default, chosen end to end: ``detect_changes`` file to file on the generated
benchmark pairs, tile sizes interleaved round after round (so that a drifting machine favours
none), each device's default batch. Prints each size's median seconds.

    python -m benchmarks.tile_choice [--size 2048] [--tiles 512,768] [--rounds 4]
(the pairs come from ``make bench``'s cache, generated when missing)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.compute import benchmark_bundle
from benchmarks.detect_bench import DEFAULT_CACHE
from benchmarks.pairs import generate_pair
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tile_choice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tiles", default="512,768")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    tiles = [int(t) for t in args.tiles.split(",")]
    before, after = generate_pair(args.size, Path(DEFAULT_CACHE))
    bundle = benchmark_bundle()[0]
    seconds: Dict[int, List[float]] = {tile: [] for tile in tiles}
    for round_ in range(args.rounds):
        for tile in tiles if round_ % 2 == 0 else reversed(tiles):
            with tempfile.TemporaryDirectory() as out:
                outputs = DetectOutputs(Path(out) / "change.tif", Path(out) / "confidence.tif")
                started = time.perf_counter()
                detect_changes(before, after, outputs, DetectOptions(device=args.device, tile_size=tile), model=bundle)
                seconds[tile].append(time.perf_counter() - started)
    for tile, times in seconds.items():
        print(f"{args.size}², tile {tile}: median {statistics.median(times):.2f} s over {len(times)} runs "
              f"({', '.join(f'{t:.2f}' for t in times)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
