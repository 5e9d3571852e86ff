"""Why the pipeline beside a GPU runs far below both its compute and its I/O bound, and which lever
helps: ``detect_changes`` on CUDA, in one process (CUDA and cuDNN warm, as in QGIS after the first
run), variants interleaved round after round, with where the main thread (the one that feeds the
GPU) spends its time.

    python -m benchmarks.gpu_levers [--size 8192] [--rounds 2] [--only "now,graph"]

Variants: detection as it is; blending in a host thread instead of on the GPU; the rows finished and
written where they are blended instead of in a thread of their own; freed memory handed back at once
(``deepcl_core.heap`` off); the main thread waiting for each batch's maps before it reads the next;
the tiles copied into each batch by the main thread; the files compressed in 16 threads; the float
maps with the floating-point predictor, the statistics' windows across block edges and each tile's
window read on its own (not cut from rows of blocks shared by the reader threads), as before;
Python's GIL switch interval lowered; other I/O thread counts; one torch thread; the network
replayed as a CUDA graph (one launch per batch instead of hundreds); and the I/O alone (the network
replaced by a stand-in that costs nothing) with several thread counts and the "before" variants.
Peak RSS per variant from the kernel's high-water mark, reset before each run (Linux). Indicative,
not a timed test; needs a CUDA device (``--device cpu`` runs it here: the "I/O alone" variants are
what this machine's reading and writing allow any network).
"""
from __future__ import annotations

import math
import statistics
import sys
import tempfile
import threading
import time
import weakref
from collections import defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

import deepcl_core.detect as detect
import deepcl_core.network_on_tiles as network_on_tiles
import deepcl_core.outputs as outputs
import deepcl_core.raster_io as raster_io
from benchmarks.pipeline_levers import interleaved, lever_parser, parsed_with_pair, selected
from benchmarks.runs import network_stand_in
from deepcl_core.batches import batch_array
from deepcl_core.confidence_calibration import PlattScaling
from deepcl_core.model.inference import torch_threads
from deepcl_core.outputs import RasterOutputs
from deepcl_core.pending import Pending
from deepcl_core.tile_reader import TileReader
from deepcl_core.write_behind import WriteBehind

ROOT = Path(__file__).resolve().parents[1]
# Where the main thread's time goes: these are called from it alone.
MAIN_THREAD_PARTS = {"waiting for tiles": (TileReader, "__next__"),
                     "a batch: inputs and network": (detect, "_predict_batch"),
                     "network (copies, launches, waiting for the GPU)": (detect, "run_within_memory"),
                     "handing rows to the writer": (WriteBehind, "submit"),
                     "waiting for the writer at the end": (WriteBehind, "finish"),
                     "statistics and network set-up": (detect, "_statistics_and_network")}
GRAPH = "network as a CUDA graph"


@contextmanager
def main_thread_timed(totals: Dict[str, float]) -> Iterator[None]:
    main = threading.get_ident()
    with ExitStack() as stack:
        for label, (owner, name) in MAIN_THREAD_PARTS.items():
            original = getattr(owner, name)

            def timed(*args, _original=original, _label=label, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    if threading.get_ident() == main:
                        totals[_label] += time.perf_counter() - started
            stack.enter_context(mock.patch.object(owner, name, timed))
        yield


def copied_inputs(predict_batch: Callable) -> Callable:
    """``_predict_batch`` given a copy of the readers' batch arrays, made by the main thread into
    fresh (page-locked, on CUDA) ones: the tiles stacked by the main thread, as before the readers
    normalised straight into the batch."""
    def predict(network, batch, inputs, device, *args, **kwargs):
        copies = tuple(batch_array(len(array), array.shape[1:], device) for array in inputs)
        for copy, array in zip(copies, inputs):
            np.copyto(copy, array)
        return predict_batch(network, batch, copies, device, *args, **kwargs)
    return predict


def load_weights(into: torch.nn.Module, source: torch.nn.Module) -> None:
    """``source``'s parameters and buffers copied into ``into``'s own tensors, in place (a captured
    CUDA graph reads them where they are); both networks must be prepared alike."""
    target, given = into.state_dict(), source.state_dict()
    if list(target) != list(given) or any(target[k].shape != given[k].shape for k in target):
        raise ValueError("the CUDA graphs replay one network: this one is not of its structure")
    with torch.inference_mode():  # in place on weights made in or out of inference mode alike
        for name, tensor in target.items():
            tensor.copy_(given[name])


def graphed_run_network() -> Callable:
    """``launch_network`` for tiles of a multiple of 32 px at scale 1, each batch shape captured once
    as a CUDA graph (inputs copied into its static buffers, one replay, outputs left in its static
    buffers or copied out). Detection prepares a new network each run: the graphs stay those of
    the first network, kept alive (they read its weights' memory; a freed one's would be reused, and
    its id too), and a later run's network has its weights copied into it once, so that a capture
    is made once per shape, not in every timed run."""
    graphs: Dict[tuple, tuple] = {}  # (batch shape, with_distance) → (graph, x1, x2, outputs)
    captured: List[torch.nn.Module] = []  # the network every graph runs, kept alive
    weights_of: List[Callable] = []  # a weak reference to the network whose weights it holds now

    def maps(network, x1: torch.Tensor, x2: torch.Tensor, with_distance: bool):
        output = network(x1, x2)
        probability = torch.sigmoid(output.logit.float())[:, 0]
        distance = (F.interpolate(output.finest_distance.float(), size=x1.shape[-2:], mode="bilinear",
                                  align_corners=False)[:, 0] if with_distance else None)
        return probability, distance

    def run(network, before: np.ndarray, after: np.ndarray, device, with_distance: bool = True, scale: int = 1,
            keep_on_device: bool = False, platt_scaling: PlattScaling = PlattScaling(), inside=None):
        assert scale == 1 and before.shape[-1] % 32 == 0 and before.shape[-2] % 32 == 0
        assert inside is None or all(tuple(size) == before.shape[-2:] for size in inside)  # no tile past the edge
        if not captured:
            captured.append(network)
            weights_of.append(weakref.ref(network))
        elif weights_of[0]() is not network:  # a dead network's reference is None: never taken for another
            load_weights(captured[0], network)
            weights_of[0] = weakref.ref(network)
        network = captured[0]
        key = (before.shape, with_distance)
        with torch.inference_mode():
            if key not in graphs:
                x1 = torch.empty(before.shape, dtype=torch.float32, device=device)
                x2 = torch.empty_like(x1)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        maps(network, x1, x2, with_distance)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = maps(network, x1, x2, with_distance)
                graphs[key] = (graph, x1, x2, outputs)
            graph, x1, x2, (probability, distance) = graphs[key]
            # Straight from the batch slots (page-locked already: pin_memory() would be a no-op, or a
            # second host copy of any other array), then waited for, as launch_network does, before
            # the readers may refill the slots.
            x1.copy_(torch.from_numpy(np.ascontiguousarray(before)), non_blocking=True)
            x2.copy_(torch.from_numpy(np.ascontiguousarray(after)), non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            graph.replay()
            probability = platt_scaling.scale_probability(probability)  # outside the graph, as detection's
            copied.synchronize()
            if keep_on_device:  # the blending, queued next on the same stream, reads them before the next replay
                return Pending((probability, distance))
            return Pending((probability.cpu().numpy(), distance.cpu().numpy() if with_distance else None))

    return run


def windows_of_each_tile(shared, pair):
    """``detect._shared_windows`` as before the shared strips: each reader thread reads its tile's
    window through its own handles and drops their decoded blocks after it."""
    def window(dataset, bands, role, x, y, width, height):
        try:
            return raster_io.read_window(dataset, bands, x, y, width, height, role, keep_integers=True)
        finally:
            for each in pair.datasets():
                each.FlushCache()
    return (partial(window, pair.before, pair.bands_before, "before"),
            partial(window, pair.after, pair.bands_after, "after"))


def compressing_in(threads: int) -> Callable:
    """Output files compressed by GDAL in ``threads`` threads, whatever detection asks."""
    def raster_outputs(specs, grid, compression_threads: int, **settings):
        return RasterOutputs(specs, grid, compression_threads=threads, **settings)
    return lambda: mock.patch.object(detect, "RasterOutputs", raster_outputs)


def waited_for(launch: Callable) -> Callable:
    """``launch_network`` that returns only once the batch's maps are on the host, as before the
    main thread launched a batch while the GPU still computed the one before."""
    def launch_and_wait(*args, **kwargs):
        maps = launch(*args, **kwargs)
        maps.result()
        if torch.cuda.is_available():  # maps left on the device for the blending are not waited for
            torch.cuda.synchronize()
        return maps
    return launch_and_wait


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def combined(*contexts: Callable) -> Callable:
    """A context manager factory that enters each of ``contexts``' managers."""
    @contextmanager
    def all_of() -> Iterator[None]:
        with ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context())
            yield
    return all_of


def variants(graphed: Callable) -> Dict[str, tuple]:
    """name → (I/O threads or None, context manager factory)."""
    network_as_graph = lambda: mock.patch.object(network_on_tiles, "launch_network", graphed)  # noqa: E731
    io_alone = lambda: mock.patch.object(network_on_tiles, "launch_network", network_stand_in)  # noqa: E731
    float_predictor = lambda: mock.patch.object(outputs, "FLOAT_PREDICTOR", "3")  # noqa: E731
    windows_across_blocks = lambda: mock.patch.object(raster_io, "_within_one_block",  # noqa: E731
                                                      lambda start, *_: start)
    return {
        "now": (None, ExitStack),
        "float maps with the floating-point predictor (before)": (None, float_predictor),
        "statistics' windows across block edges (before)": (None, windows_across_blocks),
        "each tile's window read on its own, not cut from shared rows of blocks (before)": (
            None, lambda: mock.patch.object(detect, "_shared_windows", windows_of_each_tile)),
        "blending on the host": (None, lambda: mock.patch.object(detect, "BLEND_ON_DEVICE", False)),
        "files compressed in 16 threads": (None, compressing_in(16)),
        "GPU waited for after each batch": (
            None, lambda: mock.patch.object(
                network_on_tiles, "launch_network", waited_for(network_on_tiles.launch_network))),
        "rows finished and written where they are blended": (
            None, lambda: mock.patch.object(detect, "FILE_WRITE_DEPTH", 0)),
        "freed memory handed back at once": (None, lambda: mock.patch.object(detect, "freed_memory_kept", nullcontext)),
        "tiles copied into the batch by the main thread": (
            None, lambda: mock.patch.object(detect, "_predict_batch", copied_inputs(detect._predict_batch))),
        "GIL switch interval 0.2 ms instead of 5": (None, lambda: switch_interval(2e-4)),
        "16 I/O threads": (16, ExitStack),
        "4 I/O threads": (4, ExitStack),
        "one torch thread": (None, lambda: torch_threads(1)),
        GRAPH: (None, network_as_graph),
        "I/O alone": (None, io_alone),
        "I/O alone, 4 I/O threads": (4, io_alone),
        "I/O alone, 16 I/O threads": (16, io_alone),
        "I/O alone, float maps with the floating-point predictor (before)": (None, combined(io_alone, float_predictor)),
        "I/O alone, statistics' windows across block edges (before)": (None, combined(io_alone, windows_across_blocks)),
        "I/O alone, each tile's window read on its own (before)": (None, combined(io_alone, lambda: mock.patch.object(
            detect, "_shared_windows", windows_of_each_tile))),
    }


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size


def peak_rss_mb() -> float:
    """The high-water mark in MiB (the kernel's "kB" are KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(before: Path, after: Path, bundle, folder: Path, device: str, threads: Optional[int],
             context: Callable, totals: Dict[str, float]) -> float:
    with ExitStack() as stack, tempfile.TemporaryDirectory(dir=folder) as out:
        stack.enter_context(context())
        stack.enter_context(main_thread_timed(totals))
        outputs = detect.DetectOutputs(Path(out) / "change.tif", Path(out) / "confidence.tif")
        options = detect.DetectOptions(device=device, io_threads=threads, overlap_io=True)
        peak_rss_reset()
        started = time.perf_counter()
        detect.detect_changes(before, after, outputs, options, model=bundle)
        seconds = time.perf_counter() - started
        totals["peak RSS (MiB)"] = max(totals["peak RSS (MiB)"], peak_rss_mb())
        return seconds


def main(argv: Optional[List[str]] = None) -> int:
    parser = lever_parser("python -m benchmarks.gpu_levers", __doc__.split("\n\n")[0], size=8192, rounds=2)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script itself")
    args, before, after, bundle, what = parsed_with_pair(parser, argv)
    chosen = selected(variants(graphed_run_network()), args.only, parser)
    parts: Dict[str, Dict[str, float]] = {name: defaultdict(float) for name in chosen}

    def variant(name: str, threads: Optional[int], context: Callable) -> Callable[[], float]:
        def run() -> float:
            try:
                seconds = run_once(before, after, bundle, args.cache, args.device, threads, context, parts[name])
            except Exception as error:  # one broken variant must not cost the others' figures
                print(f"  {name}: failed: {error!r}", flush=True)
                return math.nan
            print(f"  {name}: {seconds:.2f} s", flush=True)
            return seconds
        return run

    def warm_up() -> None:
        """CUDA, cuDNN and the page cache ready for every variant alike, and the CUDA graphs captured
        (once per batch shape), before any timed run."""
        run_once(before, after, bundle, args.cache, args.device, None, ExitStack, defaultdict(float))
        if GRAPH in chosen and args.device == "cuda":
            run_once(before, after, bundle, args.cache, args.device, *chosen[GRAPH], defaultdict(float))

    seconds = interleaved({name: variant(name, *v) for name, v in chosen.items()}, args.rounds, warm_up)
    megapixels = args.size ** 2 / 1e6
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else args.device
    print(f"\n{args.size}² pair on {card}, {what}; median of {args.rounds} interleaved "
          "rounds in one process; main thread's time per run (mean)\n")
    print("| variant | seconds | MP/s | peak RSS (MiB) | " + " | ".join(MAIN_THREAD_PARTS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(MAIN_THREAD_PARTS))
    for name, times in seconds.items():
        times = [t for t in times if not math.isnan(t)]
        if not times:
            continue
        median = statistics.median(times)
        shares = " | ".join(f"{parts[name][label] / len(times):.2f}" for label in MAIN_THREAD_PARTS)
        print(f"| {name} | {median:.2f} | {megapixels / median:.1f} | {parts[name]['peak RSS (MiB)']:.0f} | {shares} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
