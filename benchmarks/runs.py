"""One measured run in its own child process, so that its peak resident memory (``ru_maxrss``, taken
as :mod:`.peak_rss` says) belongs to that run alone. Kinds of run:

- ``pipeline``: ``detect_changes`` file to file (reading, aligning, normalising, network, blending,
  writing change and confidence), as users run it: the first detection in the process and a later
  one, each timed from the call (the process's start, imports and loading the model not counted);
- ``naive``: :mod:`benchmarks.naive` file to file (whole images in memory, one tile at a time,
  plain fp32 network, no prefetching);
- ``compute``: the network alone on real tiles of the pair already in memory, same batch and
  precision as the pipeline, extrapolated to the image's tile count; plus the FLOP count and the
  machine's matmul peak on the same threads;
- ``io``: the pipeline with the network replaced by a stand-in that costs nothing (its change
  probability, a function of the two images, compresses as a real one does), with the I/O threads
  detection uses beside a GPU: the most any network, on any device, can get out of
  this machine's reading, normalising, blending and writing. One-off costs that are not I/O (CUDA's
  start, the network's preparation) are paid before the timer.

    python -m benchmarks.runs --run pipeline --size 2048 --device cpu   (prints one JSON line)
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .peak_rss import run_measuring_peak

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("pipeline", "naive", "compute", "io")


def run_pipeline(args: argparse.Namespace, bundle, before: Path, after: Path, folder: Path) -> Dict:
    """Two detections of the pair in one process, each timed from its ``detect_changes`` call (torch,
    the engine and the model are loaded before): the first detection in the process as a one-off
    command runs it (on CUDA, cuDNN prepares its kernels on the way), then a later one as QGIS or a
    server runs it."""
    from deepcl_core.detect import DetectOutputs, detect_changes

    seconds = []
    for run in ("first", "later"):
        outputs = DetectOutputs(change=folder / f"{run}-change.tif", confidence=folder / f"{run}-confidence.tif")
        started = time.perf_counter()
        result = detect_changes(before, after, outputs, detect_options(args), model=bundle)
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds[0], "later_seconds": seconds[1], "tiles": result.tiles, "device": result.device}


def network_stand_in(network, x1: np.ndarray, x2: np.ndarray, device, with_distance: bool = True, scale: int = 1,
                     keep_on_device: bool = False, platt_scaling=None, inside=None):
    """``launch_network``'s stand-in for the I/O bound: costs nothing, and its change probability, a
    function of the two images, compresses as a real one does. Maps kept on the device are made
    there, from the inputs copied over as the network's are."""
    from deepcl_core.device import host_to_device
    from deepcl_core.pending import Pending

    if keep_on_device:
        x1, x2 = (host_to_device(x, device) for x in (x1, x2))
    difference = abs(x2[:, 0] - x1[:, 0])
    probability = difference / (1.0 + difference)
    return Pending((probability, probability if with_distance else None))


WARM_UP_SIZE = 256  # the small pair of the I/O bound's warm-up


def run_io(args: argparse.Namespace, bundle, before: Path, after: Path, folder: Path) -> Dict:
    """The I/O bound: a bound only if nothing but I/O is timed. Detection prepares its network (on
    CUDA the process's first use of the GPU, which creates the CUDA context) beside reading the
    statistics; with the stand-in no network runs, so it is prepared once before the timer and
    handed over, and a warm-up detection on a small pair pays what else happens once per process
    (CUDA's kernels loaded, GDAL's drivers, lazy imports). The timed run reads, normalises, blends
    and writes as before."""
    from unittest import mock

    from benchmarks.compute import inference_network
    from benchmarks.pairs import generate_pair
    from deepcl_core import detect, network_on_tiles
    from deepcl_core.device import resolve_device
    from deepcl_core.model.inference import io_threads

    options = detect_options(args)
    options.overlap_io = True  # as beside a GPU: reading and writing in background threads, one per core
    network = inference_network(bundle, resolve_device(args.device), options.precision)  # as detection's
    small = generate_pair(WARM_UP_SIZE, args.cache)
    with mock.patch.object(network_on_tiles, "launch_network", network_stand_in), \
            mock.patch.object(bundle, "build", lambda: network), \
            mock.patch.object(detect, "prepare_for_inference", lambda prepared, *_, **__: prepared):
        for run, pair in (("warm-up", small), ("timed", (before, after))):
            outputs = detect.DetectOutputs(change=folder / f"{run}-change.tif",
                                           confidence=folder / f"{run}-confidence.tif")
            started = time.perf_counter()
            result = detect.detect_changes(*pair, outputs, options, model=bundle)
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "tiles": result.tiles, "device": result.device,
            "io_threads": io_threads(beside_accelerator=True)}


def run_naive(args: argparse.Namespace, bundle, before: Path, after: Path, folder: Path) -> Dict:
    from benchmarks.naive import naive_detect
    from deepcl_core.device import describe_device, resolve_device

    device = resolve_device(args.device)
    started = time.perf_counter()
    tiles = naive_detect(before, after, folder / "change.tif", folder / "confidence.tif", bundle,
                         args.tile, args.overlap, str(device))
    return {"seconds": time.perf_counter() - started, "tiles": tiles, "device": describe_device(device)}


def run_compute(args: argparse.Namespace, bundle, before: Path, after: Path, folder: Path) -> Dict:
    import torch

    from benchmarks.compute import compute_bound, flops_per_tile, matmul_peak, sample_tiles
    from deepcl_core.device import describe_device, resolve_device
    from deepcl_core.model.inference import default_batch_size, inference_threads
    from deepcl_core.model.network import NETWORK_MULTIPLE

    device = resolve_device(args.device)
    options = detect_options(args)
    # At least eight tiles, whole batches of them: two tiles timed twice swung the bound by ±20 %.
    batch = options.batch_size or default_batch_size(device)
    count = batch * max(4 if device.type == "cuda" else 2, -(-8 // batch))
    tiles_b, tiles_a, tiles = sample_tiles(before, after, bundle, options, count)
    per_tile = compute_bound(bundle, tiles_b, tiles_a, device, options, repeats=3 if device.type == "cuda" else 2)
    peak, peak_what = matmul_peak(device, args.precision)
    # The FLOPs of the tiles run: the grid's (an image smaller than the tile size is one smaller tile),
    # padded to the network's multiple as run_network pads them.
    height, width = (-(-side // NETWORK_MULTIPLE) * NETWORK_MULTIPLE for side in tiles_b.shape[-2:])
    return {"seconds": per_tile * tiles, "tiles": tiles, "device": describe_device(device),
            "flops_per_tile": flops_per_tile(bundle, width, tiles_b.shape[1], height), "flops_tile": [height, width],
            "peak_gflops": peak, "peak_what": peak_what,
            "threads": inference_threads(device) or torch.get_num_threads()}


def detect_options(args: argparse.Namespace):
    from deepcl_core.detect import DetectOptions

    return DetectOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch or None, device=args.device,
                         precision=args.precision)


def child(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.plain_allocation:  # the lever off (benchmarks.memory_levers): glibc's defaults throughout
        import deepcl_core.heap

        deepcl_core.heap._LIBC = None
    if args.dates_in_one_batch:  # the lever off (benchmarks.memory_levers): the encoder as training runs it
        from deepcl_core.model import DeepCLNet

        DeepCLNet.dates_in_one_batch = True
    import torch

    from benchmarks.compute import benchmark_bundle
    from benchmarks.pairs import generate_pair

    logging.getLogger("deepcl_core").setLevel(logging.ERROR)  # the untrained-model warning is expected here
    bundle, what = benchmark_bundle(args.model)
    before, after = generate_pair(args.size, args.cache)
    run = {"pipeline": run_pipeline, "naive": run_naive, "compute": run_compute, "io": run_io}[args.run]
    with tempfile.TemporaryDirectory(dir=args.cache, prefix=f"{args.run}-") as folder:
        if args.in_thread:  # as QGIS runs detection (Processing and the dock: a task's thread)
            with ThreadPoolExecutor(1) as pool:
                record = pool.submit(run, args, bundle, before, after, Path(folder)).result()
        else:
            record = run(args, bundle, before, after, Path(folder))
    record.update(run=args.run, size=args.size, model=what)
    record.setdefault("threads", torch.get_num_threads())
    print(json.dumps(record))
    return 0


def measure(run: str, size: int, device: str, args: argparse.Namespace) -> Dict:
    """Run one kind of run on one size in a child process; adds its peak RSS and megapixels/s."""
    command = [sys.executable, "-m", "benchmarks.runs", "--run", run, "--size", str(size), "--device", device,
               "--cache", str(args.cache), "--tile", str(args.tile), "--overlap", str(args.overlap),
               "--batch", str(args.batch), "--precision", args.precision]
    if args.model:
        command += ["--model", str(args.model)]
    for flag in ("plain_allocation", "in_thread", "dates_in_one_batch"):
        if getattr(args, flag, False):
            command.append("--" + flag.replace("_", "-"))
    with tempfile.TemporaryFile("w+") as stdout:
        usage = run_measuring_peak(command, cwd=ROOT, stdout=stdout)
        stdout.seek(0)
        text = stdout.read()
    if usage.status != 0:
        raise SystemExit(f"benchmark: the {run} run on {size}² ({device}) failed with status {usage.status}")
    record = json.loads(text.strip().splitlines()[-1])
    record["peak_rss_mb"] = usage.peak_rss_mb
    record["minor_faults"] = usage.minor_faults  # pages the run's process faulted in
    return with_speed(record)


def with_speed(record: Dict) -> Dict:
    record["megapixels_per_s"] = record["size"] ** 2 / 1e6 / record["seconds"]
    return record


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runs", description="one measured benchmark run")
    parser.add_argument("--run", choices=RUNS, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=768)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, help="0: the device's default")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16, as detection takes it")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--plain-allocation", action="store_true",
                        help="glibc's malloc as it is (deepcl_core.heap off), to measure that lever")
    parser.add_argument("--in-thread", action="store_true", help="run in a worker thread, as QGIS does")
    parser.add_argument("--dates-in-one-batch", action="store_true",
                        help="both dates through the encoder in one batch, as training runs it, to measure that lever")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(child())
