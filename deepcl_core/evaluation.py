"""``deepcl evaluate``: the real detection pipeline on labelled pairs, compared with their labels.

Per pair and pooled over all pixels (the headline): precision, recall, F1, IoU, OA, kappa, the
ROC-AUC of the distance map (and of the confidence) as a change score, and how far the confidence
reads as a probability (Brier score, expected calibration error; pooled: with its bins). With pseudo-change, each
before image x is paired with T(x), a pseudo-change transform of itself written as a GeoTIFF on
the same grid; nothing changed there, so every detected pixel is a false alarm."""
from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
from osgeo import gdal

from .band_choice import choose_bands, sensor_band_names
from .confidence_calibration import reliability
from .detect import DetectOptions, DetectOutputs, detect_changes, resolve_model
from .errors import Cancelled, InputError, OutputError, releases_locals_on_error
from .gdal_utils import gdal_return_values, is_alpha
from .metrics import Confusion
from .outputs import CHANGE_NODATA
from .raster_io import is_georeferenced, open_image, open_raster, read_window
from .tiling import DEFAULT_TILE
from .training.augment import PseudoChangeStrength, pseudo_change
from .training.pairs import PairFiles, find_pairs, nothing_to_score, open_pair, read_label

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


@dataclass
class EvaluateOptions:
    model: Optional[Path]  # None: the bundled model
    data_dirs: Sequence[Path]
    pseudo_change: bool = False
    device: str = "auto"
    threshold: Optional[float] = None  # None: the model's
    input_scale: Optional[int] = None  # None: the model's for each pair's pixel size
    tile_size: int = DEFAULT_TILE
    overlap: Optional[int] = None  # None: detection's, scaled down for small tiles (DetectOptions.overlap_used)
    batch_size: Optional[int] = None  # None: the device's default
    seed: int = 0  # of the pseudo-change transforms


@gdal_return_values
@releases_locals_on_error  # a kept exception must not keep the pairs' files open
def evaluate(options: EvaluateOptions, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelCallback] = None) -> Dict[str, Any]:
    """A JSON-ready report: ``pooled`` (the headline), ``per_pair`` and, on request, ``pseudo_change``.
    Every pair is checked (:func:`check_pair`) before the first detection; detection's warnings name their pair."""
    report = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    detect_options = DetectOptions(threshold=options.threshold, input_scale=options.input_scale,
                                   tile_size=options.tile_size, overlap=options.overlap,
                                   batch_size=options.batch_size, device=options.device)
    detect_options.validate()  # up front: a bad tile is no pair's fault, and should cost no pair's detection
    pairs = find_pairs(options.data_dirs)
    if not pairs:
        raise InputError(f"no labelled pairs found below {', '.join(str(d) for d in options.data_dirs)}; a pair "
                         "is a folder with before.*, after.* and label.* rasters (or the LEVIR-CD A/ B/ label/ layout)")
    bundle = resolve_model(options.model)
    steps = len(pairs) * (2 if options.pseudo_change else 1)
    pooled, per_pair, scores = Confusion(), {}, _ScorePool()
    pseudo: Dict[str, Any] = {}
    # Labels are read when checked and again when scored: their warnings are said once, when checked.
    with pair_warnings_said_once(), \
            tempfile.TemporaryDirectory(prefix="deepcl-evaluate-") as tmp, _in_the_temporary_folder():
        report(0.0, f"checking {len(pairs)} pair{'' if len(pairs) == 1 else 's'}")
        for pair in pairs:
            if cancel is not None and cancel():  # checking a large data set takes a while too
                raise Cancelled()
            check_pair(pair, bundle.bands)
        work = Path(tmp)
        for index, pair in enumerate(pairs):
            report(index / steps, f"pair {pair.name}")
            confusion, distance, confidence, label, result = _evaluate_pair(pair, work, detect_options, bundle, cancel)
            pooled += confusion
            fit = reliability(confidence, label)
            per_pair[pair.name] = {**confusion.metrics(undefined=None), "auc_distance": roc_auc(distance, label),
                                   "auc_confidence": roc_auc(confidence, label), "brier": fit["brier"],
                                   "ece": fit["ece"], "reliability_bins": fit["bins"], "threshold": result.threshold,
                                   "input_scale": result.input_scale, "pixel_size_m": result.pixel_size_m,
                                   "confidence_calibrated": result.confidence_calibrated}
            scores.add(distance, confidence, label)
        if options.pseudo_change:
            pseudo = _pseudo_change_rates(pairs, work, detect_options, bundle, options.seed, report, steps, cancel)
    report(1.0, "done")
    return {"model": str(options.model) if options.model else "bundled", "pairs": len(pairs),
            "threshold": bundle.threshold if options.threshold is None else options.threshold,
            "thresholds_by_pixel_size": bundle.thresholds_by_pixel_size if options.threshold is None else (),
            "input_scale": options.input_scale,
            "input_scales_by_pixel_size": bundle.input_scales_by_pixel_size if options.input_scale is None else (),
            "pooled": {**pooled.metrics(undefined=None), **scores.auc(), **scores.reliability()}, "per_pair": per_pair,
            **({"pseudo_change": pseudo} if options.pseudo_change else {}),
            "seconds": round(time.perf_counter() - started, 2)}


@contextlib.contextmanager
def _in_the_temporary_folder() -> Iterator[None]:
    """Failures to write the pairs' maps name the folder they go to and how to move it: a full disk
    there said only "(is the disk full?)" of a path in /tmp the user never gave."""
    try:
        yield
    except OutputError as exc:
        raise OutputError(f"{exc}; evaluate writes each pair's maps to the temporary folder {tempfile.gettempdir()}: "
                          "free space there, or set TMPDIR to a folder with room") from None


def check_pair(pair: PairFiles, bands: Sequence[str]) -> None:
    """Refuse, before any pair's detection, a pair whose evaluation would fail: images that do not open,
    lack the model's ``bands`` or cannot be aligned, a label that is not binary or covers none of the
    before image. Training loads every pair before its first step for the same reason; a bad last pair
    cost the detection of every pair before it. The label is read and let go (scoring reads it again),
    so that a large data set's labels need not all fit in memory."""
    before_ds = open_pair(pair, bands).before
    if not read_label(pair, before_ds)[1].any():
        raise nothing_to_score(pair.name)


def pair_warnings_said_once() -> "contextlib.AbstractContextManager[None]":
    """While it lasts, a warning about a pair's files (a label, guessed bands) is said once however often
    they are read: evaluation reads labels to check them and again to score them, and the classical
    peers read them once more."""
    return _filtered(logging.getLogger(read_label.__module__), _SaidOnce())


class _SaidOnce(logging.Filter):
    """Drops a record whose message this thread has logged already."""

    def __init__(self) -> None:
        super().__init__()
        self.thread, self.said = threading.get_ident(), set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:  # another run's (a QGIS task's), not ours to judge
            return True
        message = record.getMessage()
        if message in self.said:
            return False
        self.said.add(message)
        return True


@contextlib.contextmanager
def _filtered(logger: logging.Logger, log_filter: logging.Filter) -> Iterator[None]:
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def _evaluate_pair(pair: PairFiles, work: Path, options: DetectOptions, bundle: Any,
                   cancel: Optional[CancelCallback]):
    outputs = _outputs(work, pair.name.replace("/", "_"))
    try:
        result = detect_changes(pair.before, pair.after, outputs, options, cancel=cancel, model=bundle,
                                log_prefix=f"pair {pair.name}: ", bands_by_hand=False)
    except InputError as exc:  # of several pairs, the user must learn which one
        raise InputError(f"pair {pair.name}: {exc}") from None
    change = _read(outputs.change)
    label, label_valid = read_label(pair, open_raster(pair.before, f"{pair.name}: before"))
    valid = (change != CHANGE_NODATA) & label_valid
    if not valid.any():  # a label placed elsewhere, or all nodata: it was scored as a pair with OA 0 and kappa 1
        raise nothing_to_score(pair.name)
    confusion = Confusion.of(change == 1, label, valid)
    distance, confidence = _read(outputs.distance)[valid], _read(outputs.confidence)[valid]
    for path in outputs.rasters():
        path.unlink()
    return confusion, distance, confidence, label[valid].astype(bool), result


def _pseudo_change_rates(pairs: Sequence[PairFiles], work: Path, options: DetectOptions, bundle: Any, seed: int,
                         report: ProgressCallback, steps: int, cancel: Optional[CancelCallback]) -> Dict[str, Any]:
    """False-positive rate of detection on (x, T(x)) for each before image x."""
    rates: Dict[str, float] = {}
    seeds: Dict[str, int] = {}  # each pair's, so that one pair's figure can be rerun alone
    false_alarms = valid_total = 0
    strength = PseudoChangeStrength()
    for index, pair in enumerate(pairs):
        report((len(pairs) + index) / steps, f"pseudo-change {pair.name}")
        transformed = work / "pseudo_change_input.tif"
        seeds[pair.name] = seed + index
        write_pseudo_change(pair.before, transformed, seeds[pair.name], bundle.bands, strength)
        outputs = _outputs(work, "pseudo")
        result = detect_changes(pair.before, transformed, outputs, options, cancel=cancel, model=bundle,
                                log_prefix=f"pair {pair.name} (pseudo-change): ", bands_by_hand=False)
        rates[pair.name] = result.changed_pixels / result.valid_pixels if result.valid_pixels else 0.0
        false_alarms += result.changed_pixels
        valid_total += result.valid_pixels
        for path in [transformed, *outputs.rasters()]:
            path.unlink()
    return {"false_positive_rate": false_alarms / valid_total if valid_total else 0.0, "per_pair": rates,
            "transform": f"radiometric (brightness, contrast, gamma, colour, haze), ≤{strength.shift_px:g} px shift, "
                         f"a rotation moving no pixel over {strength.rotation_px:g} px, noise, blur",
            "seed": seed, "seed_per_pair": seeds}


def _outputs(work: Path, stem: str) -> DetectOutputs:
    return DetectOutputs(change=work / f"{stem}_change.tif", confidence=work / f"{stem}_confidence.tif",
                         distance=work / f"{stem}_distance.tif")


def _read(path: Path) -> np.ndarray:
    dataset = gdal.Open(str(path))
    return dataset.GetRasterBand(1).ReadAsArray()


class _ScorePool:
    """Change scores and labels of every valid pixel of every pair, for the pooled AUC."""

    def __init__(self) -> None:
        self.distance: List[np.ndarray] = []
        self.confidence: List[np.ndarray] = []
        self.label: List[np.ndarray] = []

    def add(self, distance: np.ndarray, confidence: np.ndarray, label: np.ndarray) -> None:
        self.distance.append(distance.astype(np.float32))
        self.confidence.append(confidence.astype(np.float32))
        self.label.append(label)

    def auc(self) -> Dict[str, Optional[float]]:
        label = np.concatenate(self.label)
        return {"auc_distance": roc_auc(np.concatenate(self.distance), label),
                "auc_confidence": roc_auc(np.concatenate(self.confidence), label)}

    def reliability(self) -> Dict[str, Any]:
        """The confidence's Brier score and calibration error, and its bins under "reliability_bins"."""
        fit = reliability(np.concatenate(self.confidence), np.concatenate(self.label))
        return {"brier": fit["brier"], "ece": fit["ece"], "reliability_bins": fit["bins"]}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Area under the ROC curve of ``scores`` for the positive ``labels``, by the rank-sum
    (Mann-Whitney) formula with tied scores given their average rank. None when one class is absent."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average rank of each tie group
    rank_sum = float(ranks[labels[order]].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def write_pseudo_change(source: Path, out: Path, seed: int, model_bands: Sequence[str] = (),
                        strength: PseudoChangeStrength = PseudoChangeStrength()) -> None:
    """T(x) of a raster as a Float32 GeoTIFF on its grid, with its band names. The transform works
    on each band's min-max range (nothing is clipped) and is mapped back to the original values; its
    haze is coloured by the bands' names (:func:`haze_band_names`)."""
    dataset = open_image(source, "before")
    # An alpha band is validity, not a colour: it comes back as NaN where nothing is valid.
    bands = [index for index in range(1, dataset.RasterCount + 1)
             if not is_alpha(dataset.GetRasterBand(index))]
    pixels, valid = read_window(dataset, bands, 0, 0, dataset.RasterXSize, dataset.RasterYSize, "before")
    low = np.array([band[valid].min() if valid.any() else 0.0 for band in pixels], np.float32).reshape(-1, 1, 1)
    high = np.array([band[valid].max() if valid.any() else 1.0 for band in pixels], np.float32).reshape(-1, 1, 1)
    span = np.where(high > low, high - low, 1.0)
    unit = np.where(valid, (pixels - low) / span, 0.0).astype(np.float32)
    names = haze_band_names(dataset, bands, model_bands)
    transformed = pseudo_change(unit, np.random.default_rng(seed), strength, names) * span + low
    transformed[:, ~valid] = np.nan
    _write_like(dataset, bands, transformed, out)


def haze_band_names(dataset: gdal.Dataset, bands: Sequence[int], model_bands: Sequence[str] = ()) -> List[str]:
    """A name for each of ``bands`` as detection reads the file (band_choice): every band's sensor code
    or colour interpretation where each has one; else the bands detection takes for the model's
    (choose_bands), named as the model names them; "" (a grey veil) for a band left unnamed."""
    named = sensor_band_names(dataset)  # alpha bands left out, as in ``bands``
    if len(named) == len(bands):
        return list(named)
    if not model_bands:
        return [""] * len(bands)
    by_index = dict(zip(choose_bands(dataset, None, model_bands, "before"), model_bands))  # detection's choice
    return [by_index.get(index, "") for index in bands]


def _write_like(template: gdal.Dataset, bands: Sequence[int], pixels: np.ndarray, out: Path) -> None:
    """``pixels`` as a Float32 GeoTIFF like ``template``, NaN declared nodata even where none is: the
    file's values are all ground, and an image that declares its nodata is not suspected of fill (a
    darkening clips x's darkest pixels to its minimum, often 0, which detection would take for it)."""
    target = gdal.GetDriverByName("GTiff").Create(str(out), template.RasterXSize, template.RasterYSize,
                                                  pixels.shape[0], gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"])
    if target is None:
        raise OutputError(f"cannot write the pseudo-change image {out}")
    if is_georeferenced(template):
        target.SetGeoTransform(template.GetGeoTransform())
        target.SetProjection(template.GetProjection())
    for index, source in enumerate(bands):
        source_band, band = template.GetRasterBand(source), target.GetRasterBand(index + 1)
        band.SetDescription(source_band.GetDescription())
        band.SetColorInterpretation(source_band.GetColorInterpretation())
        band.SetNoDataValue(float("nan"))
        band.WriteArray(pixels[index])
    target.FlushCache()
    target = None
