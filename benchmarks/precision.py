"""How far a precision moves the bundled model's output from fp32 on real pairs: the largest and
mean confidence difference, and the share of valid pixels that change class at the model's
threshold. The confidence as detection writes it: same tiling, and each pair's enlargement,
scaling and threshold for its pixel size (``predict_as_detected``).

    python -m benchmarks.precision --precision bf16 PAIR_FOLDER...      (pairs read here with GDAL)
``benchmarks/gpu_compute.py --pairs`` calls :func:`precision_agreement` on pairs packed by
``scripts/device_pairs.py`` where GDAL is missing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from benchmarks.compute import benchmark_bundle
from deepcl_core.model.inference import autocast_dtype, precision_name, prefers_channels_last, prepare_for_inference
from deepcl_core.training.inference import predict_as_detected
from deepcl_core.training.pairs import LoadedPair

TILE = 768  # detection's default


def precision_agreement(pairs: Sequence[LoadedPair], device: torch.device, precision: str = "auto") -> Dict:
    bundle, _ = benchmark_bundle()
    layout = prefers_channels_last(device)
    exact = prepare_for_inference(bundle.build(), device, channels_last=layout, precision="fp32")
    mixed = prepare_for_inference(bundle.build(), device, channels_last=layout, precision=precision)
    rows, flipped, valid_total = [], 0, 0
    for pair in pairs:
        reference = predict_as_detected(exact, bundle, pair, device, tile=TILE)
        fast = predict_as_detected(mixed, bundle, pair, device, tile=TILE)
        threshold = bundle.threshold_for(pair.pixel_size_m)
        difference = np.abs(fast - reference)[pair.valid]
        changed = ((fast >= threshold) != (reference >= threshold))[pair.valid]
        flipped += int(changed.sum())
        valid_total += int(pair.valid.sum())
        rows.append({"pair": f"{pair.files.group}/{pair.name}", "max_difference": round(float(difference.max()), 5),
                     "mean_difference": round(float(difference.mean()), 6), "flipped": round(float(changed.mean()), 6)})
        print(json.dumps(rows[-1]), flush=True)
    return {"precision": precision_name(autocast_dtype(device, precision)),
            "thresholds": [bundle.threshold, *(t for _, t in bundle.thresholds_by_pixel_size)],
            "tile": TILE, "pairs": rows, "flipped_pooled": flipped / valid_total,
            "max_difference": max(r["max_difference"] for r in rows)}


def main(argv: Optional[List[str]] = None) -> int:
    from deepcl_core.training.pairs import find_pairs, load_pairs

    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    bundle, _ = benchmark_bundle()
    pairs = load_pairs(find_pairs(args.folders), bundle.bands, bundle.normalization)
    result = precision_agreement(pairs, torch.device(args.device), args.precision)
    print(f"{result['precision']} against fp32 on {len(pairs)} pairs (tile {TILE}, the model's thresholds "
          f"{', '.join(f'{t:.3g}' for t in result['thresholds'])}): "
          f"{100 * result['flipped_pooled']:.3f} % of valid pixels change class; largest confidence difference "
          f"{result['max_difference']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
