"""A model's decision threshold chosen on labelled pairs: the network's score from which a pixel
counts as changed that gives the highest F1 pooled over all their valid pixels, stored as that
score's probability under the Platt scaling fitted on the same pixels (:mod:`..confidence_calibration`),
which the model's confidence layer then shows.

The network is trained with a 0.5 boundary, but the score it reaches on a new sensor or
resolution often sits lower (on 10 m Sentinel-2 pairs the changed pixels' score spreads well
under 0.5 while their ranking stays good), so the threshold is set on validation pairs and
stored in the model file, never on the pairs a model is judged on. Coarse imagery (from
:data:`COARSE_PIXEL_M` metres per pixel, e.g. Sentinel-2) gets its own threshold and scaling,
chosen on the coarse validation pairs, because its changed pixels' score sits far lower than aerial ones',
together with the factor such images are enlarged by for the network (:data:`INPUT_SCALES`):
a building of 10 m imagery spans a few pixels, fewer than the encoder's coarsest stride."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypedDict

import numpy as np
import torch

from ..confidence_calibration import LogitHistogram, PlattScaling, fit_platt_scaling
from ..detect import DetectOptions, ProgressCallback
from ..device import resolve_device
from ..errors import InputError, ModelFileError, releases_locals_on_error
from ..gdal_utils import gdal_return_values
from ..metrics import Confusion
from ..model.inference import prepare_for_inference
from ..model_file import ModelBundle, load_model, save_model
from ..outputs import check_output_paths
from ..tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tile_overlap
from .inference import predict_pair
from .options import check_model_file_name
from .pairs import LoadedPair, find_pairs, load_pairs
from .provenance import record_recalibration

# A coarse grid (finer steps only fit the validation pairs' noise), finer at the low end where
# rare, faint change (10 m imagery) puts its best threshold: the bundled model's best on its 10 m
# validation pair was 0.01, then the grid's lowest value, so the grid reaches below it lest such an
# optimum be cut off (F1 on oscd/nantes at scores around it, measured with `deepcl evaluate PAIR
# --threshold T` while thresholds still applied to the network's score: 0.005 F1 0.42, 0.007 0.49,
# 0.01 0.52, 0.015 0.49).
CANDIDATES = (0.002, 0.005, 0.01, 0.02, 0.03) + tuple(round(0.05 * i, 2) for i in range(1, 20))

# What calibration reports (and the model file keeps as provenance, and `deepcl calibrate` prints):
# a class's threshold, the score it was chosen at, its Platt scaling and how well it fitted.
ClassCalibration = TypedDict("ClassCalibration", {
    "threshold": float, "score_threshold": float, "platt_scaling": List[float], "platt_scaling_note": str,
    "log_loss_of_score": float, "log_loss_of_probability": float, "f1": float, "f1_at_0.5": float})


class CoarseCalibration(ClassCalibration, total=False):
    min_pixel_size_m: float
    input_scale: int
    f1_at_general_threshold: float
    f1_by_input_scale: Dict[str, float]
    pairs: List[str]


class Calibration(ClassCalibration, total=False):
    """The model's own class (general), with the coarse classes under ``by_pixel_size``; what
    :func:`apply_calibration` adds records what the model had and kept."""

    pairs: List[str]
    candidates: str
    rule: str
    by_pixel_size: List[CoarseCalibration]
    every_pair_coarse: bool
    previous_threshold: float
    kept_by_pixel_size: str
    kept_threshold: str


# Between aerial / very-high-resolution imagery (0.3-2 m) and Sentinel-2 or Landsat (10-30 m).
COARSE_PIXEL_M = 5.0

# Enlargements tried on coarse pairs; each costs its square in network time.
INPUT_SCALES = (1, 2, 3)


def confusions_by_threshold(probability: np.ndarray, label: np.ndarray, valid: np.ndarray,
                            candidates: Sequence[float] = CANDIDATES) -> Dict[float, Confusion]:
    """Confusion counts of ``probability >= t`` against ``label`` over ``valid`` pixels, for each t."""
    scores = probability[valid]
    truth = label[valid] > 0
    return {t: Confusion.of(scores >= t, truth) for t in candidates}


def best_threshold(confusions: Dict[float, Confusion]) -> float:
    """The candidate of highest F1; among equals the one nearest 0.5 (the training boundary)."""
    return max(confusions, key=lambda t: (round(confusions[t].metrics()["f1"], 6), -abs(t - 0.5)))


def confusions_at_calibrated_thresholds(pairs: Sequence[LoadedPair], probabilities: Sequence[np.ndarray]
                                        ) -> Dict[str, Tuple[float, Confusion]]:
    """Each pair's (threshold, confusion) at the threshold calibration would choose from these
    probabilities for its class of pixel size (coarse or not), the images as they are: a score of
    the network's ranking of pixels, not of where its confidence happens to sit against 0.5."""
    counts = [confusions_by_threshold(probability, pair.label, pair.valid)
              for pair, probability in zip(pairs, probabilities)]
    coarse = [_is_coarse(pair) for pair in pairs]
    chosen = {kind: best_threshold({t: sum((c[t] for c, k in zip(counts, coarse) if k == kind), Confusion())
                                    for t in CANDIDATES})
              for kind in set(coarse)}
    return {pair.name: (chosen[kind], pair_counts[chosen[kind]])
            for pair, pair_counts, kind in zip(pairs, counts, coarse)}


def calibrate_threshold(network: torch.nn.Module, pairs: Sequence[LoadedPair], device: torch.device,
                        tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                        progress: Optional[ProgressCallback] = None,
                        stop_if_cancelled: Callable[[], None] = lambda: None) -> Calibration:
    """Run ``network`` over ``pairs`` (tiled as detection tiles) and choose the thresholds: one for
    coarse pairs (from :data:`COARSE_PIXEL_M`) when there are any, chosen on them alone together
    with their input scale, and the model's own threshold, chosen on the others (on all pairs,
    as they are, when every pair is coarse). Each class also gets the Platt scaling that makes the
    network's score a probability on its pairs (at its input scale); its threshold is the chosen
    score's probability, so the change map stays the one of the chosen score.
    Returns {"threshold", "score_threshold", "platt_scaling", "f1", "f1_at_0.5", "pairs",
    "by_pixel_size", …} for the provenance. ``progress(fraction, message)``: each run of the network;
    ``stop_if_cancelled``: called before each batch of tiles."""
    check_calibration_pairs(pairs)
    network.eval()
    coarse = {p.name for p in pairs if _is_coarse(p)}
    fine = _Scores()
    by_scale = {scale: _Scores() for scale in INPUT_SCALES} if coarse else {}
    runs = [(pair, scale, target) for pair in pairs
            for scale, target in (by_scale.items() if pair.name in coarse else [(1, fine)])]
    for done, (pair, scale, target) in enumerate(runs):
        if progress is not None:  # a coarse pair runs at each enlargement: minutes for a Sentinel-2 scene
            progress(done / len(runs), f"pair {pair.name}" + (f", enlarged {scale}×" if pair.name in coarse else ""))
        probability = check_scores_finite(predict_pair(network, pair, device, tile, overlap, scale=scale,
                                                       stop_if_cancelled=stop_if_cancelled)[0], pair,
                                          scale, ", so no decision threshold or confidence scaling can be chosen")
        target.add(probability, pair)
    as_they_are = by_scale.get(1, _Scores())
    general = fine if len(coarse) < len(pairs) else fine + as_they_are
    chosen = best_threshold(general.counts)
    calibration: Calibration = {
        **_scaled(chosen, general), "f1": general.counts[chosen].metrics()["f1"],
        "f1_at_0.5": general.counts[0.5].metrics()["f1"],
        "pairs": [p.name for p in pairs if p.name not in coarse or general is not fine],
        "candidates": ", ".join(str(t) for t in CANDIDATES),
        "rule": "highest F1 pooled over the pairs' valid pixels, over the network's scores; the threshold is that "
                "score's probability under the Platt scaling fitted on the same pixels",
        "by_pixel_size": [], "every_pair_coarse": general is not fine}
    if coarse:
        best_by_scale = {scale: best_threshold(scores.counts) for scale, scores in by_scale.items()}
        f1_by_scale = {scale: by_scale[scale].counts[t].metrics()["f1"] for scale, t in best_by_scale.items()}
        scale = max(INPUT_SCALES, key=lambda k: (round(f1_by_scale[k], 6), -k))  # equal: the cheaper
        calibration["by_pixel_size"] = [{
            "min_pixel_size_m": COARSE_PIXEL_M, **_scaled(best_by_scale[scale], by_scale[scale]),
            "input_scale": scale, "f1": f1_by_scale[scale], "f1_at_0.5": as_they_are.counts[0.5].metrics()["f1"],
            "f1_at_general_threshold": as_they_are.counts[chosen].metrics()["f1"],
            "f1_by_input_scale": {str(k): f1 for k, f1 in f1_by_scale.items()},
            "pairs": sorted(coarse)}]
    return calibration


class ScoresNotFinite(ModelFileError):
    """The network's scores on a pair are not all numbers: its weights overflow (a training that
    diverged). Its histogram would leave them out and fit no scaling "for want of changed and
    unchanged pixels", its confusions count them unchanged: a threshold chosen on the rest is wrong."""


def check_scores_finite(probability: np.ndarray, pair: LoadedPair, scale: int = 1, why: str = "") -> np.ndarray:
    """``probability``, refused where it is NaN or infinite on any valid pixel of ``pair``; ``why``:
    what such scores prevent."""
    bad = int(np.count_nonzero(~np.isfinite(probability[pair.valid])))
    if bad:
        enlarged = f" enlarged {scale}×" if scale != 1 else ""
        raise ScoresNotFinite(f"the network's scores are not numbers (NaN or infinite) on {bad:,} of "
                              f"{int(pair.valid.sum()):,} valid pixels of pair {pair.name}{enlarged}: the network "
                              f"overflows on it{why}")
    return probability


class _Scores:
    """What calibration keeps of the network's scores on a class of pairs: the confusion at each
    candidate threshold and the histogram the Platt scaling is fitted on."""

    def __init__(self) -> None:
        self.counts: Dict[float, Confusion] = {t: Confusion() for t in CANDIDATES}
        self.logits = LogitHistogram()

    def add(self, probability: np.ndarray, pair: LoadedPair) -> None:
        for t, counts in confusions_by_threshold(probability, pair.label, pair.valid).items():
            self.counts[t] = self.counts[t] + counts
        self.logits.add(probability, pair.label, pair.valid)

    def __add__(self, other: "_Scores") -> "_Scores":
        total = _Scores()
        total.counts = {t: self.counts[t] + other.counts[t] for t in CANDIDATES}
        total.logits = self.logits + other.logits
        return total


def _scaled(score_threshold: float, scores: _Scores) -> Dict[str, Any]:
    """The Platt scaling fitted on ``scores`` and the threshold it maps ``score_threshold`` to,
    with the fit's log-likelihood before and after, for the provenance."""
    scaling, note = fit_platt_scaling(scores.logits)
    return {"threshold": scaling.probability(score_threshold), "score_threshold": score_threshold,
            "platt_scaling": scaling.to_list(), "platt_scaling_note": note,
            "log_loss_of_score": round(scores.logits.log_loss(PlattScaling()), 6),
            "log_loss_of_probability": round(scores.logits.log_loss(scaling), 6)}


def check_calibration_pairs(pairs: Sequence[LoadedPair]) -> None:
    """Every F1 is 0 on labels without change, so no threshold can be chosen on them: refused for
    each class of pixel size on its own, as each gets its own threshold (before training, too)."""
    if not pairs:
        raise InputError("threshold calibration needs at least one labelled pair")
    for kind in (False, True):
        members = [p for p in pairs if _is_coarse(p) == kind]
        if members and not any(p.has_change for p in members):
            names = ", ".join(p.name for p in members)
            what = f"of {COARSE_PIXEL_M:g} m or coarser " if kind else ""
            raise InputError(f"the labels of the pairs {what}used to choose the decision threshold ({names}) "
                             "mark no change, so every threshold scores an F1 of 0; add pairs "
                             f"{what}with change")


def apply_calibration(bundle: ModelBundle, calibration: Calibration, keep_unmeasured: bool = False) -> None:
    """Store ``calibration``'s thresholds, confidence scalings and input scales, and the calibration itself as
    provenance, in ``bundle``. ``keep_unmeasured`` (recalibrating a trained model): a class of
    pixel size the calibration had no pairs of keeps the model's setting instead of losing it, e.g.
    the Sentinel-2 threshold, scaling and enlargement when the pairs are aerial."""
    calibration["previous_threshold"] = bundle.threshold
    coarse = [(float(c["min_pixel_size_m"]), c) for c in calibration["by_pixel_size"]]
    if keep_unmeasured and not coarse:
        calibration["kept_by_pixel_size"] = "the model's (no coarse pair), as its earlier calibration chose them"
        calibration["by_pixel_size"] = bundle.provenance.get("threshold_calibration", {}).get("by_pixel_size", [])
    else:
        bundle.thresholds_by_pixel_size = tuple((size, float(c["threshold"])) for size, c in coarse)
        bundle.input_scales_by_pixel_size = tuple((size, int(c["input_scale"])) for size, c in coarse)
        bundle.platt_scalings_by_pixel_size = tuple((size, PlattScaling(*c["platt_scaling"])) for size, c in coarse)
    if keep_unmeasured and calibration["every_pair_coarse"]:
        calibration["kept_threshold"] = "the model's (every pair coarse)"
    else:
        bundle.threshold = float(calibration["threshold"])
        bundle.platt_scaling = PlattScaling(*calibration["platt_scaling"])
    bundle.provenance["threshold_calibration"] = calibration


# What calibration sets in a model (ModelBundle's fields): a fine-tuned model starts from its initial
# model's, and what calibration does not measure stays (apply_calibration's keep_unmeasured).
SETTINGS = ("threshold", "thresholds_by_pixel_size", "input_scales_by_pixel_size", "platt_scaling",
            "platt_scalings_by_pixel_size")


def model_settings(bundle: ModelBundle) -> Dict[str, Any]:
    """``bundle``'s thresholds, confidence scalings and input scales, as ModelBundle's keyword arguments."""
    return {name: getattr(bundle, name) for name in SETTINGS}


def describe_settings(bundle: ModelBundle) -> Dict[str, Any]:
    """``bundle``'s settings in plain types, as its file stores them, for the provenance."""
    return {name: value for name, value in bundle.to_dict().items() if name in SETTINGS}


def settings_changes(before: ModelBundle, after: ModelBundle) -> List[str]:
    """Each class of pixel size's settings in ``after`` against ``before``, in plain words: kept, or
    what changed from what to what (e.g. a fine-tuned model against its initial model)."""
    lines = []
    for size in sorted({s for s, _ in before.thresholds_by_pixel_size + after.thresholds_by_pixel_size}
                       | {s for s, _ in before.input_scales_by_pixel_size + after.input_scales_by_pixel_size}):
        settings = [(bundle.threshold_for(size), bundle.input_scale_for(size), bundle.platt_scaling_for(size))
                    for bundle in (before, after)]
        lines.append(_class_change(f"pixels of {size:g} m or coarser", *settings))
    general = [(bundle.threshold, 1, bundle.platt_scaling) for bundle in (before, after)]
    return [_class_change("other pixels", *general)] + lines


def _class_change(name: str, before: Tuple[float, int, PlattScaling], after: Tuple[float, int, PlattScaling]) -> str:
    def text(what: str, value: Any) -> str:
        if what == "confidence scaling":
            return "none (the network's score)" if value.is_identity else f"{value.slope:.3g}, {value.intercept:.3g}"
        return f"{value:.3g}" if what == "threshold" else f"{value}x"

    whats = ("threshold", "input scale", "confidence scaling")
    if before == after:
        return f"{name}: kept ({'; '.join(f'{w} {text(w, v)}' for w, v in zip(whats, before))})"
    return f"{name}: " + "; ".join(f"{w} {text(w, old)} -> {text(w, new)}" if old != new else f"{w} {text(w, old)} kept"
                                   for w, old, new in zip(whats, before, after))


def _is_coarse(pair: LoadedPair) -> bool:
    return pair.pixel_size_m is not None and pair.pixel_size_m >= COARSE_PIXEL_M


@gdal_return_values
@releases_locals_on_error  # a kept exception must not keep the pairs' files open
def calibrate_model(model: Path, data_dirs: Sequence[Path], out: Path, device: str = "auto",
                    tile: int = DEFAULT_TILE, overwrite: bool = False, command_line: str = "",
                    progress: Optional[ProgressCallback] = None) -> Calibration:
    """Choose ``model``'s thresholds on the labelled pairs below ``data_dirs`` and write the model,
    otherwise unchanged, to ``out`` (atomically: ``out`` may be ``model``; another existing file
    only with ``overwrite``, and never a pair's file). The thresholds of a class of pixel size
    without pairs stay the model's, with the record of the calibration that chose them. The
    provenance records the recalibration (``command_line``: the command that asked for it).
    ``progress(fraction, message)``: each run of the network, once the pairs are read and checked (a
    bad pair is refused in one line, as any bad input). Returns the calibration."""
    overlap = tile_overlap(tile)
    # Detection's rules, before any work: tiles it refuses ran here on NaN scores (an overlap wider
    # than the tile) or crashed (a tile step of 0)
    DetectOptions(tile_size=tile, overlap=overlap).validate()
    bundle = load_model(model)
    files = find_pairs(data_dirs)
    if not files:
        raise InputError(f"no labelled pairs found below {', '.join(str(d) for d in data_dirs)}")
    check_output_paths([out], [path for pair in files for path in pair.files()],
                       overwrite=overwrite or Path(out).resolve() == Path(model).resolve(), make_folders=True)
    check_model_file_name(Path(out))  # as training's: detection opens .pt files
    target = resolve_device(device)
    network = prepare_for_inference(bundle.build(), target, copy=False)
    try:
        calibration = calibrate_threshold(network, load_pairs(files, bundle.bands, bundle.normalization), target,
                                          tile, overlap, progress)
    except ScoresNotFinite as error:  # the model is what is wrong: named, with what to do
        raise ScoresNotFinite(f"model {model}: {error}; its weights are damaged or were written by a training "
                              "that diverged: calibrate another model, or retrain with a lower learning rate (--lr)"
                              ) from None
    if progress is not None:
        progress(1.0, "done")
    apply_calibration(bundle, calibration, keep_unmeasured=True)
    record_recalibration(bundle.provenance, files, command_line)
    save_model(bundle, out)
    return calibration
