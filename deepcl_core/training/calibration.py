"""A model's decision threshold chosen on labelled pairs: the change probability from which a
pixel counts as changed that gives the highest F1 pooled over all their valid pixels.

The network is trained with a 0.5 boundary, but the confidence it reaches on a new sensor or
resolution often sits lower (on 10 m Sentinel-2 pairs the changed pixels' confidence spreads
well under 0.5 while their ranking stays good), so the threshold is set on validation pairs and
stored in the model file, never on the pairs a model is judged on."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..metrics import Confusion
from .inference import predict_pair
from .pairs import LoadedPair

# A coarse grid: finer steps only fit the validation pairs' noise.
CANDIDATES = tuple(round(0.05 * i, 2) for i in range(1, 20))


def confusions_by_threshold(probability: np.ndarray, label: np.ndarray, valid: np.ndarray,
                            candidates: Sequence[float] = CANDIDATES) -> Dict[float, Confusion]:
    """Confusion counts of ``probability >= t`` against ``label`` over ``valid`` pixels, for each t."""
    scores = probability[valid]
    truth = label[valid] > 0
    return {t: Confusion.of(scores >= t, truth) for t in candidates}


def best_threshold(confusions: Dict[float, Confusion]) -> float:
    """The candidate of highest F1; among equals the one nearest 0.5 (the training boundary)."""
    return max(confusions, key=lambda t: (round(confusions[t].metrics()["f1"], 6), -abs(t - 0.5)))


def calibrate_threshold(network: torch.nn.Module, pairs: Sequence[LoadedPair], device: torch.device,
                        tile: int = 768) -> Dict[str, object]:
    """Run ``network`` over ``pairs`` (tiled as detection tiles) and choose the threshold.
    Returns {"threshold", "f1", "f1_at_0.5", "pairs", "candidates"} for the model's provenance."""
    if not pairs:
        raise InputError("threshold calibration needs at least one labelled pair")
    network.eval()
    pooled: Dict[float, Confusion] = {t: Confusion() for t in CANDIDATES}
    for pair in pairs:
        probability, _ = predict_pair(network, pair, device, tile)
        for t, counts in confusions_by_threshold(probability, pair.label, pair.valid).items():
            pooled[t] = pooled[t] + counts
    chosen = best_threshold(pooled)
    return {"threshold": chosen, "f1": pooled[chosen].metrics()["f1"], "f1_at_0.5": pooled[0.5].metrics()["f1"],
            "pairs": [p.name for p in pairs], "candidates": f"{CANDIDATES[0]}..{CANDIDATES[-1]} step 0.05",
            "rule": "highest F1 pooled over the pairs' valid pixels"}


def calibrate_model(model: Path, data_dirs: Sequence[Path], out: Path, device: str = "auto",
                    tile: int = 768) -> Dict[str, object]:
    """Choose ``model``'s threshold on the labelled pairs below ``data_dirs`` and write the model,
    otherwise unchanged, to ``out`` (atomically: ``out`` may be ``model``). Returns the calibration."""
    from ..device import resolve_device
    from ..model.inference import prepare_for_inference
    from ..model_file import load_model, save_model
    from .pairs import find_pairs, load_pairs

    bundle = load_model(model)
    files = find_pairs(data_dirs)
    if not files:
        raise InputError(f"no labelled pairs found below {', '.join(str(d) for d in data_dirs)}")
    target = resolve_device(device)
    network = prepare_for_inference(bundle.build(), target)
    calibration = calibrate_threshold(network, load_pairs(files, bundle.bands, bundle.normalization), target, tile)
    calibration["previous_threshold"] = bundle.threshold
    bundle.threshold = float(calibration["threshold"])
    bundle.provenance["threshold_calibration"] = calibration
    save_model(bundle, out)
    return calibration
