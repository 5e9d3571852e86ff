"""End-to-end A/B of the pipeline's speed levers, added one at a time, on one generated pair.

    python -m benchmarks.pipeline_levers [--size 1024] [--rounds 3] [--tiles 512] [--only "writing thread,now"]

Every variant runs ``detect_changes`` file to file on the CPU; the levers are switched off by
patching the switches detection reads (:data:`deepcl_core.detect.WRITE_BEHIND_DEPTH`,
:data:`deepcl_core.detect.KEEP_DECODED_BYTES`,
:data:`deepcl_core.model.inference.IO_RESERVED_CORES`, the folding and layout passed to
``prepare_for_inference``) or by its ``overlap_io`` option. Variants run interleaved, round after
round, alternating the order, so a drifting machine load biases none of them; medians are printed.
Indicative, not a timed test.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar
from unittest import mock

import deepcl_core.detect as detect
import deepcl_core.model.inference as inference
from benchmarks.compute import benchmark_bundle
from benchmarks.naive import naive_detect
from benchmarks.pairs import generate_pair

ROOT = Path(__file__).resolve().parents[1]
Variant = TypeVar("Variant")
# name → (fold batch norms, channels_last, write-behind depth, cores reserved for I/O threads,
# reading and writing in background threads while the network runs)
STEPS = {
    "before the speed work (plain network, NCHW, reader thread, blending and writes inline, all threads)":
        (False, False, 0, 0, True),
    "+ batch norms folded": (True, False, 0, 0, True),
    "+ channels_last": (True, True, 0, 0, True),
    "+ blending and writing thread": (True, True, detect.WRITE_BEHIND_DEPTH, 0, True),
    "+ one core left to the reader, blending and writing (not kept)": (True, True, detect.WRITE_BEHIND_DEPTH, 1, True),
    "reading and writing in turn with the network, on all cores (= detection now)":
        (True, True, detect.WRITE_BEHIND_DEPTH, inference.IO_RESERVED_CORES, False),
}
NOW = "reading and writing in turn with the network, on all cores (= detection now)"


def pipeline_variant(before: Path, after: Path, bundle, folder: Path, fold: bool, channels_last: bool,
                     depth: int, reserved: int, overlap_io: bool, tile: int = detect.DetectOptions.tile_size,
                     keep_decoded: int = detect.KEEP_DECODED_BYTES) -> Callable[[], float]:
    prepare = inference.prepare_for_inference

    def prepare_as_asked(network, device, channels_last_wanted=False, **_):
        return prepare(network, device, fold=fold, channels_last=channels_last)

    def run() -> float:
        with ExitStack() as stack, tempfile.TemporaryDirectory(dir=folder) as out:
            stack.enter_context(mock.patch.object(detect, "prepare_for_inference", prepare_as_asked))
            stack.enter_context(mock.patch.object(detect, "WRITE_BEHIND_DEPTH", depth))
            stack.enter_context(mock.patch.object(inference, "IO_RESERVED_CORES", reserved))
            stack.enter_context(mock.patch.object(detect, "KEEP_DECODED_BYTES", keep_decoded))
            outputs = detect.DetectOutputs(Path(out) / "change.tif", Path(out) / "confidence.tif")
            started = time.perf_counter()
            options = detect.DetectOptions(device="cpu", tile_size=tile, overlap_io=overlap_io)
            detect.detect_changes(before, after, outputs, options, model=bundle)
            return time.perf_counter() - started
    return run


def naive_variant(before: Path, after: Path, bundle, folder: Path) -> Callable[[], float]:
    def run() -> float:
        with tempfile.TemporaryDirectory(dir=folder) as out:
            started = time.perf_counter()
            naive_detect(before, after, Path(out) / "change.tif", Path(out) / "confidence.tif", bundle)
            return time.perf_counter() - started
    return run


def lever_parser(prog: str, description: str, size: int, rounds: int) -> argparse.ArgumentParser:
    """The arguments every lever script takes: --size, --rounds, --cache and --only."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--only", default="", help="comma-separated parts of variant names: run only those "
                                                   "(large sizes take minutes per variant)")
    return parser


def parsed_with_pair(parser: argparse.ArgumentParser,
                     argv: Optional[List[str]]) -> Tuple[argparse.Namespace, Path, Path, object, str]:
    """The arguments, the generated pair of ``--size`` and the benchmark model (bundle, what it is)."""
    args = parser.parse_args(argv)
    logging.getLogger("deepcl_core").setLevel(logging.ERROR)
    before, after = generate_pair(args.size, args.cache)
    return (args, before, after, *benchmark_bundle())


def selected(variants: Dict[str, Variant], only: str, parser: argparse.ArgumentParser) -> Dict[str, Variant]:
    """The variants whose names contain one of ``only``'s comma-separated parts (all when it is
    empty); a usage error when none does."""
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    chosen = {name: v for name, v in variants.items() if not wanted or any(part in name for part in wanted)}
    if not chosen:
        parser.error(f"no variant matches --only {only!r}")
    return chosen


def interleaved(variants: Dict[str, Callable[[], float]], rounds: int,
                warm_up: Optional[Callable[[], object]] = None) -> Dict[str, List[float]]:
    """Each variant ``rounds`` times, round after round, the order reversed every other round, after
    ``warm_up`` (default: the first variant once) has readied kernels, allocator and file cache."""
    (warm_up or next(iter(variants.values())))()
    seconds: Dict[str, List[float]] = {name: [] for name in variants}
    for index in range(rounds):
        order = list(variants.items())
        for name, run in order if index % 2 == 0 else reversed(order):
            seconds[name].append(run())
    return seconds


def main(argv: Optional[List[str]] = None) -> int:
    parser = lever_parser("python -m benchmarks.pipeline_levers", __doc__.split("\n\n")[0], size=1024, rounds=3)
    parser.add_argument("--tiles", default="512", help="other tile sizes tried with detection as it is now")
    args, before, after, bundle, what = parsed_with_pair(parser, argv)
    variants = {name: pipeline_variant(before, after, bundle, args.cache, *step) for name, step in STEPS.items()}
    for tile in (int(t) for t in args.tiles.split(",") if t.strip()):
        variants[f"detection now, tile {tile} instead of {detect.DetectOptions.tile_size}"] = pipeline_variant(
            before, after, bundle, args.cache, *STEPS[NOW], tile=tile)
    dropped = "detection now, GDAL's decoded blocks dropped after each read of rows, whatever the size"
    variants[dropped] = pipeline_variant(before, after, bundle, args.cache, *STEPS[NOW], keep_decoded=0)
    variants["naive baseline"] = naive_variant(before, after, bundle, args.cache)
    variants = selected(variants, args.only, parser)
    seconds = interleaved(variants, args.rounds)
    megapixels = args.size ** 2 / 1e6
    print(f"{args.size}² pair, {what}; median of {args.rounds} interleaved rounds\n")
    print("| variant (end to end, CPU) | seconds | megapixels/s |\n|---|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.1f} | {megapixels / median:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
