"""GPU rows that need no GDAL: the bundled network alone on tiles in GPU-bound batches, as
detection runs it (folded batch norms, channels-last, fp16 autocast, the same ``run_network`` with
its host copies), for tile sizes and batch sizes, beside the card's measured fp16 matmul peak.
For a lent GPU machine without GDAL, where ``make bench``'s file-to-file rows cannot run.

    python benchmarks/gpu_compute.py [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from device_experiments import without_gdal  # noqa: E402

without_gdal()

import torch  # noqa: E402

from benchmarks.compute import (benchmark_bundle, flops_per_tile, inference_network, matmul_peak,  # noqa: E402
                                network_seconds, random_tiles)
from benchmarks.precision import precision_agreement  # noqa: E402
from deepcl_core.device import describe_device  # noqa: E402
from deepcl_core.model import DeepCLNet  # noqa: E402
from deepcl_core.tiling import TileGrid  # noqa: E402

OVERLAP = 64  # detection's default


def measure(device: torch.device, tiles, batches) -> Dict:
    bundle, what = benchmark_bundle()
    network = inference_network(bundle, device)
    peak, peak_what = matmul_peak(device)
    rows = []
    for side in tiles:
        flops = flops_per_tile(bundle, side, bundle.config.in_channels)
        # Output pixels per tile once the overlaps are shared out, on a large (8,192²) image.
        effective = 8192 * 8192 / len(TileGrid(8192, 8192, side, OVERLAP))
        for batch in batches:
            count = max(4 * batch, 64 * 512 * 512 // (side * side))
            before, after = random_tiles(count, side, bundle.config.in_channels)
            seconds = network_seconds(network, before, after, device, batch, repeats=3) / count
            rows.append({"tile": side, "batch": batch, "ms_per_tile": round(seconds * 1e3, 3),
                         "tile_mp_per_s": round(side * side / seconds / 1e6, 1),
                         "output_mp_per_s": round(effective / seconds / 1e6, 1),
                         "gflop_per_tile": round(flops / 1e9, 2),
                         "achieved_tflop_s": round(flops / seconds / 1e12, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return {"device": describe_device(device), "model": what, "matmul_peak_tflop_s": round(peak / 1e3, 1),
            "matmul": peak_what, "overlap": OVERLAP, "rows": rows, "torch": torch.__version__}


def render(result: Dict, command: str) -> str:
    lines = ["# GPU benchmark: the network alone", "",
             f"Produced by `{command}` on {result['device']} (torch {result['torch']}); "
             f"model: {result['model']}; overlap {result['overlap']} px; fp16 autocast, folded batch norms, "
             "channels-last, the `run_network` of detection with its pinned host copies both ways.", "",
             "This page exists because the GPU machine it ran on has no GDAL: the file-to-file rows "
             "(reading, warping, writing) come from `make bench` on a machine with a CUDA device and GDAL.", "",
             "*output MP/s*: megapixels of the result per second once tile overlaps are shared out "
             "(8,192² image). *TFLOP/s*: the network's counted FLOPs over the time; the card's measured "
             f"peak is {result['matmul_peak_tflop_s']} TFLOP/s ({result['matmul']}).", "",
             "| tile | batch | ms per tile | tile MP/s | output MP/s | GFLOP per tile | TFLOP/s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['tile']} | {row['batch']} | {row['ms_per_tile']} | {row['tile_mp_per_s']} | "
                     f"{row['output_mp_per_s']} | {row['gflop_per_tile']} | {row['achieved_tflop_s']} |")
    agreement = result.get("agreement")
    if agreement:
        lines += ["", f"Detection's default precision here ({agreement['precision']}) against fp32, the bundled "
                  f"model on real pairs (tile {agreement.get('tile', 768)}, its thresholds "
                  f"{', '.join(f'{t:.3g}' for t in agreement['thresholds'])}): "
                  f"{100 * agreement['flipped_pooled']:.3f} % of valid pixels change class.", "",
                  "| pair | largest confidence difference | mean difference | pixels that change class |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['pair']} | {r['max_difference']} | {r['mean_difference']} | {100 * r['flipped']:.3f} % |"
                  for r in agreement["pairs"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--from-json", type=Path, help="render earlier measurements instead of measuring")
    parser.add_argument("--report", type=Path, help="write a Markdown page here")
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--device", default="cuda", help="cpu only to try the script out")
    parser.add_argument("--pairs", type=Path, nargs="*", default=[],
                        help="packed real pairs (scripts/device_pairs.py) for the precision agreement")
    parser.add_argument("--dates-in-one-batch", action="store_true",
                        help="both dates through the encoder in one batch, as docs/benchmarks_gpu.md was measured "
                             "(A/B of that lever)")
    args = parser.parse_args()
    if args.dates_in_one_batch:
        DeepCLNet.dates_in_one_batch = True
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    elif args.device == "cuda" and not torch.cuda.is_available():
        print("GPU: not measured (no CUDA device)")
        return 0
    else:
        result = measure(torch.device(args.device), args.tiles, args.batches)
        result["command"] = "python3 " + " ".join(sys.argv)
        if args.pairs:
            from device_pairs import load_packed

            pairs = [pair for path in args.pairs for pair in load_packed(path)]
            result["agreement"] = precision_agreement(pairs, torch.device(args.device))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.report:
        args.report.write_text(render(result, result["command"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
