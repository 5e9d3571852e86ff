"""A/B timings of the inference levers, the network alone on tiles in memory (not a timed test).

    python -m benchmarks.levers [--tile 768] [--batch 1] [--tiles 4] [--rounds 3] [--device cpu] [--compile]
        [--report docs/levers.md]

Variants are timed interleaved, round after round, in one process, so that a machine whose load
drifts (another job on the CPU) biases none of them; the table gives each variant's median
megapixels per second and its speed relative to the first row. Indicative, not a substitute for the
end-to-end benchmark (``benchmarks.detect_bench``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from benchmarks.compute import benchmark_network, random_tiles
from deepcl_core.network_on_tiles import run_network
from deepcl_core.heap import freed_memory_kept
from deepcl_core.model.inference import prefers_channels_last, prepare_for_inference

Variant = Callable[[], float]  # one timed run; returns seconds


def _timed(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
           batch: int, threads: Optional[int] = None) -> Variant:
    def run() -> float:
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            started = time.perf_counter()
            for start in range(0, len(before), batch):
                run_network(network, before[start:start + batch], after[start:start + batch], device, False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - started
        finally:
            torch.set_num_threads(previous)
    return run


def variants(args: argparse.Namespace, device: torch.device) -> Dict[str, tuple]:
    """name → (variant, megapixels it computes). The first row is the network as it was before
    the speed work; the second as detection now prepares it; the rest vary one lever of that."""
    plain = benchmark_network().eval().to(device)
    ready = prepare_for_inference(plain, device, channels_last=prefers_channels_last(device))
    before, after = random_tiles(args.tiles, args.tile)
    megapixels = args.tiles * output_megapixels(args.tile)
    n = args.batch
    table = {
        f"plain network (NCHW, BN unfolded), batch {n}": (_timed(plain, before, after, device, n), megapixels),
        f"as detection prepares it (BN folded, {_layout(device)}), batch {n}": (_timed(ready, before, after, device, n),
                                                                        megapixels),
        f"BN folded, NCHW, batch {n}": (_timed(prepare_for_inference(plain, device), before, after, device, n),
                                        megapixels),
        f"BN unfolded, channels_last, batch {n}": (
            _timed(prepare_for_inference(plain, device, fold=False, channels_last=True), before, after, device, n),
            megapixels),
    }
    in_one_batch = prepare_for_inference(plain, device, channels_last=prefers_channels_last(device))
    in_one_batch.network.dates_in_one_batch = True  # as training runs the encoder
    table[f"as prepared, both dates in one encoder batch, batch {n}"] = (
        _timed(in_one_batch, before, after, device, n), megapixels)
    for other in sorted({1, 2, 4} - {n}):
        table[f"as prepared, batch {other}"] = (_timed(ready, before, after, device, other), megapixels)
    if device.type == "cpu" and torch.get_num_threads() > 1:
        table[f"as prepared, {torch.get_num_threads() - 1} torch thread(s)"] = (
            _timed(ready, before, after, device, n, torch.get_num_threads() - 1), megapixels)
    table[f"as prepared, bf16 autocast (--precision bf16), batch {n}"] = (
        _timed(prepare_for_inference(plain, device, channels_last=prefers_channels_last(device), precision="bf16"),
               before, after, device, n), megapixels)
    if args.compile:  # the warm-up run in measure() pays the compilation
        compiled = prepare_for_inference(plain, device, channels_last=prefers_channels_last(device))
        compiled.network = torch.compile(compiled.network)
        table[f"as prepared, torch.compile, batch {n}"] = (_timed(compiled, before, after, device, n), megapixels)
    for side in args.other_tiles:
        b, a = random_tiles(max(1, round(args.tiles * args.tile ** 2 / side ** 2)), side)
        table[f"as prepared, tile {side}"] = (_timed(ready, b, a, device, n), len(b) * output_megapixels(side))
    return table


def output_megapixels(side: int, overlap: int = 64) -> float:
    """A tile's share of a large image's result once the overlaps are shared out: (side - overlap)²."""
    return (side - overlap) ** 2 / 1e6


def _layout(device: torch.device) -> str:
    return "channels_last" if prefers_channels_last(device) else "NCHW"


def measure(table: Dict[str, tuple], rounds: int) -> List[tuple]:
    for run, _ in table.values():  # warm-up: allocator, kernels, caches
        run()
    seconds: Dict[str, List[float]] = {name: [] for name in table}
    for _ in range(rounds):
        for name, (run, _) in table.items():
            seconds[name].append(run())
    return [(name, table[name][1] / statistics.median(times)) for name, times in seconds.items()]


def report(rows: List[tuple]) -> str:
    reference = rows[0][1]
    lines = ["| variant (network only, tiles in memory) | output megapixels/s | vs first row |", "|---|---:|---:|"]
    lines += [f"| {name} | {speed:.3f} | {speed / reference:.2f}× |" for name, speed in rows]
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=768, help="default: detection's")
    parser.add_argument("--tiles", type=int, default=4, help="tiles per timed run")
    parser.add_argument("--batch", type=int, default=1, help="default: detection's on the CPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    parser.add_argument("--report", help="also write the table, with the command, to this Markdown file")
    parser.add_argument("--other-tiles", default="512,640,1024",
                        help="tile sides compared at about equal pixels, per output megapixel (overlap 64 shared out)")
    args = parser.parse_args(argv)
    args.other_tiles = [int(s) for s in args.other_tiles.split(",") if s.strip()]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    started = time.perf_counter()
    with freed_memory_kept():  # as detection runs the network
        rows = measure(variants(args, device), args.rounds)
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
              f"median of {args.rounds} interleaved rounds; {time.perf_counter() - started:.0f} s in all")
    print(header + "\n")
    print(report(rows))
    if args.report:
        command = "python -m benchmarks.levers " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.report, "w", encoding="utf-8") as out:
            out.write(f"# Inference levers, the network alone\n\nProduced by `{command.strip()}`: {header}.\n\n"
                      f"{report(rows)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
