"""Classical change-detection peers, for comparison with DeepCL on the same pairs:

- change-vector analysis (CVA): the length of the difference vector of the two images, each
  stretched per image exactly as detection stretches it, thresholded by Otsu's method;
- the Multivariate Alteration Detector (MAD) of Orfeo ToolBox (``otbcli_MultivariateAlterationDetector``,
  Debian ``otb-bin``), whose change variates are summed to a chi-square statistic and thresholded by Otsu.

A peer whose tool is missing or fails is reported as not run, with why, rather than fatal: it comes
last in ``deepcl evaluate --classical``, and its failure cost the finished DeepCL metrics and the
other peer's results, which need no tool.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .errors import DeepCLError, InputError
from .metrics import Confusion
from .normalization import NormalizationSpec
from .raster_io import read_window
from .training.pairs import PairFiles, load_pair, open_pair, read_label

LOG = logging.getLogger(__name__)

OTB_MAD = "otbcli_MultivariateAlterationDetector"
OTB_MISSING = f"{OTB_MAD} not found; install Orfeo ToolBox (Debian: apt install otb-bin)"
METHOD_NAMES = {"cva": "change-vector analysis", "mad": "MAD (Orfeo ToolBox)"}
UNIT_STRETCH = NormalizationSpec(mean=(0.0,), std=(1.0,))  # the percentile stretch alone, to [0, 1]
OTSU_CLIP_PERCENTILE = 99.9  # a few extreme values would otherwise squeeze the histogram into one bin


class PeerUnavailable(DeepCLError):
    """A classical peer's tool is missing or failed: that peer cannot be compared, the others still can."""


@dataclass
class ClassicalResult:
    method: str
    confusion: Confusion
    threshold: float
    seconds: float

    def to_dict(self) -> Dict[str, float]:
        return {"method": self.method, "threshold": self.threshold, "seconds": round(self.seconds, 2),
                **self.confusion.metrics(undefined=None)}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu 1979)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("no valid value to threshold")
    low, high = float(values.min()), float(np.percentile(values, OTSU_CLIP_PERCENTILE))
    if high <= low:
        return low
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts)
    weight_above = counts.sum() - weight_below
    sum_below = np.cumsum(counts * centres)
    mean_below = sum_below / np.maximum(weight_below, 1)
    mean_above = (sum_below[-1] - sum_below) / np.maximum(weight_above, 1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def change_vector_analysis(before: np.ndarray, after: np.ndarray,
                           valid: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray]:
    """(magnitude, Otsu threshold, change map) for (bands, h, w) images already stretched to [0, 1]."""
    magnitude = np.sqrt(((after.astype(np.float32) - before.astype(np.float32)) ** 2).sum(axis=0))
    threshold = otsu_threshold(magnitude[valid])
    return magnitude, threshold, (magnitude > threshold) & valid


def cva_pair(pair: PairFiles, bands: Sequence[str] = ("red", "green", "blue")) -> ClassicalResult:
    """CVA with Otsu on one labelled pair, against its label."""
    started = time.perf_counter()
    loaded = load_pair(pair, bands, UNIT_STRETCH)
    _, threshold, change = change_vector_analysis(loaded.before, loaded.after, loaded.valid)
    return ClassicalResult("cva_otsu", Confusion.of(change, loaded.label, loaded.valid), threshold,
                           time.perf_counter() - started)


def mad_chi_square(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Chi-square of OTB's MAD variates for (bands, h, w) images on one grid: Σ_i (MAD_i / σ_i)²,
    σ_i the standard deviation of variate i over the valid pixels."""
    binary = shutil.which(OTB_MAD)
    if binary is None:
        raise PeerUnavailable(OTB_MISSING)
    with tempfile.TemporaryDirectory(prefix="deepcl-mad-") as tmp:
        paths = [Path(tmp) / name for name in ("before.tif", "after.tif", "mad.tif")]
        for image, path in zip((before, after), paths):
            _write_float(_fill_invalid(image, valid), path)
        completed = subprocess.run([binary, "-in1", str(paths[0]), "-in2", str(paths[1]), "-out", str(paths[2])],
                                   capture_output=True, text=True, timeout=600)
        if completed.returncode != 0 or not paths[2].is_file():
            last = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no message"]
            raise PeerUnavailable(f"{OTB_MAD} failed (exit {completed.returncode}): {last[0]}")
        variates = gdal.Open(str(paths[2])).ReadAsArray().astype(np.float64).reshape(-1, *valid.shape)
    sigma = np.array([v[valid].std() for v in variates]).reshape(-1, 1, 1)
    return ((variates / np.where(sigma > 0, sigma, 1.0)) ** 2).sum(axis=0)


def mad_pair(pair: PairFiles, bands: Sequence[str] = ("red", "green", "blue")) -> ClassicalResult:
    """OTB MAD with Otsu on the chi-square, on one labelled pair, against its label."""
    started = time.perf_counter()
    before, after, valid, label = _raw_pair(pair, bands)
    chi_square = mad_chi_square(before, after, valid)
    threshold = otsu_threshold(chi_square[valid])
    change = (chi_square > threshold) & valid
    return ClassicalResult("otb_mad_otsu", Confusion.of(change, label, valid), threshold,
                           time.perf_counter() - started)


def _raw_pair(pair: PairFiles, bands: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unstretched bands of both images on the before grid (MAD is invariant to per-band affine
    scaling, so it gets the values as they are), the common validity and the label."""
    before_ds, _, aligned, bands_before, bands_after = open_pair(pair, bands)
    size = (before_ds.RasterXSize, before_ds.RasterYSize)
    before, valid_b = read_window(before_ds, bands_before, 0, 0, *size, f"{pair.name}: before")
    after, valid_a = read_window(aligned, bands_after, 0, 0, *size, f"{pair.name}: after")
    label, label_valid = read_label(pair, before_ds)
    return before, after, valid_b & valid_a & label_valid, label


def _fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels get the band mean, so they do not bend MAD's statistics (OTB has no mask)."""
    out = image.astype(np.float32).copy()
    for band in out:
        band[~valid] = band[valid].mean() if valid.any() else 0.0
    return out


def _write_float(image: np.ndarray, path: Path) -> None:
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), image.shape[2], image.shape[1], image.shape[0],
                                                   gdal.GDT_Float32)
    for index, band in enumerate(image):
        dataset.GetRasterBand(index + 1).WriteArray(band)
    dataset.FlushCache()
    dataset = None


def classical_unavailable(methods: Sequence[str] = ("cva", "mad")) -> Dict[str, str]:
    """Why each of ``methods`` cannot run here (MAD without Orfeo ToolBox on PATH), found without
    reading a pair: a caller that needs every peer can refuse before any work. Methods that can run
    are absent."""
    return {"mad": OTB_MISSING} if "mad" in methods and shutil.which(OTB_MAD) is None else {}


def classical_report(pairs: Sequence[PairFiles], bands: Sequence[str] = ("red", "green", "blue"),
                     methods: Sequence[str] = ("cva", "mad")) -> Dict[str, Dict]:
    """Per-pair and pooled metrics of each classical method, as JSON-ready dicts. A method whose tool
    is missing or fails is ``{"not_run": why}``, with a warning; a pair that cannot be used still stops
    the report (:class:`InputError`)."""
    runners = {"cva": cva_pair, "mad": mad_pair}
    report: Dict[str, Dict] = {}
    for method, why in classical_unavailable(methods).items():  # said before the other methods' work
        LOG.warning("%s was not run: %s", METHOD_NAMES[method], why)
        report[method] = {"not_run": why}
    for method in (m for m in methods if m not in report):
        try:
            report[method] = _method_report(runners[method], pairs, bands)
        except PeerUnavailable as exc:
            LOG.warning("%s was not run: %s", METHOD_NAMES[method], exc)
            report[method] = {"not_run": str(exc)}
    return {method: report[method] for method in methods}  # in the order asked for


def _method_report(runner: Callable[[PairFiles, Sequence[str]], ClassicalResult], pairs: Sequence[PairFiles],
                   bands: Sequence[str]) -> Dict[str, Dict]:
    results: Dict[str, ClassicalResult] = {}
    for pair in pairs:
        try:
            results[pair.name] = runner(pair, bands)
        except PeerUnavailable as exc:  # a tool failing on one pair cannot be compared on the others either
            raise PeerUnavailable(f"on pair {pair.name}: {exc}") from None
    pooled = sum((r.confusion for r in results.values()), Confusion())
    return {"pooled": pooled.metrics(undefined=None), "per_pair": {n: r.to_dict() for n, r in results.items()}}
