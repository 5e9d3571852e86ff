"""The network's change score made a probability: Platt scaling of its logit, fitted on labelled
pairs, and the reliability of a confidence map against a label (Brier score, expected
calibration error).

The network is trained with a 0.5 boundary on aerial pairs; on other imagery its score ranks
pixels well but sits where it sits (on 10 m Sentinel-2 pairs changed pixels score 0.01-0.1), so
a confidence of 0.02 could mean "likely changed". ``sigmoid(slope · logit + intercept)``, fitted
by maximum likelihood on validation pairs for each class of pixel size, keeps the ranking and the
change map (thresholds are mapped the same way; but see ``network_on_tiles.run_network`` on tiles'
overlaps) and makes the confidence layer read as the share of such pixels that changed in those
pairs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch

# Logits are binned this finely for the fit: the fit's error from binning is far below what a few
# validation pairs can tell apart, and a histogram adds up across pairs and tiles in fixed memory.
_LOGIT_RANGE = 17.0  # float32 probabilities saturate near |logit| 16.6
_BIN_WIDTH = 0.02
_EDGES = np.arange(-_LOGIT_RANGE, _LOGIT_RANGE + _BIN_WIDTH / 2, _BIN_WIDTH)
_CENTRES = (_EDGES[:-1] + _EDGES[1:]) / 2

_SCORE_EPS = 1e-7  # scores are clipped this far from 0 and 1 before their logit

RELIABILITY_BINS = 10  # equal-width confidence bins of the expected calibration error


@dataclass(frozen=True)
class PlattScaling:
    """``probability = sigmoid(slope · logit + intercept)`` of the network's change logit; the
    identity (1, 0) leaves the network's score as it is. ``slope`` is positive: the order of
    pixels, and so the change map at the mapped threshold, does not change."""

    slope: float = 1.0
    intercept: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def scale_probability(self, score: torch.Tensor) -> torch.Tensor:
        """The calibrated probability of each of the network's float32 scores (0-1)."""
        if self.is_identity:
            return score
        logit = torch.logit(score, eps=_SCORE_EPS)
        return torch.sigmoid(logit * self.slope + self.intercept)

    def probability(self, score: float) -> float:
        """The calibrated probability of a pixel the network scores ``score`` (0-1), e.g. the
        model's threshold chosen on the network's scores."""
        if self.is_identity:
            return float(score)
        return float(_sigmoid(self.slope * _logit(np.float64(score)) + self.intercept))

    def to_list(self) -> list:
        return [float(self.slope), float(self.intercept)]


class LogitHistogram:
    """Changed and unchanged pixels counted by the logit of their network score, added up over
    tiles and pairs: what :func:`fit_platt_scaling` fits."""

    def __init__(self) -> None:
        self.changed = np.zeros(len(_CENTRES), dtype=np.int64)
        self.unchanged = np.zeros(len(_CENTRES), dtype=np.int64)

    def add(self, score: np.ndarray, label: np.ndarray, valid: np.ndarray) -> None:
        """``score`` (0-1) against boolean-like ``label``, over ``valid`` pixels whose score is a number."""
        valid = valid & np.isfinite(score)
        logits = _logit(score[valid].astype(np.float64))
        bins = np.clip(np.searchsorted(_EDGES, logits, side="right") - 1, 0, len(_CENTRES) - 1)
        changed = label[valid] > 0
        self.changed += np.bincount(bins[changed], minlength=len(_CENTRES))
        self.unchanged += np.bincount(bins[~changed], minlength=len(_CENTRES))

    def __add__(self, other: "LogitHistogram") -> "LogitHistogram":
        total = LogitHistogram()
        total.changed = self.changed + other.changed
        total.unchanged = self.unchanged + other.unchanged
        return total

    def log_loss(self, scaling: PlattScaling) -> float:
        """Mean negative log-likelihood of the labels under ``scaling`` (nats per pixel)."""
        return _mean_cross_entropy(self.changed, self.changed + self.unchanged, (scaling.slope, scaling.intercept))


def fit_platt_scaling(histogram: LogitHistogram) -> Tuple[PlattScaling, str]:
    """The slope and intercept of highest likelihood (Newton's method, with step halving), and a
    note for the provenance. As Platt did, the labels are the smoothed targets (N₊ + 1) / (N₊ + 2)
    and 1 / (N₋ + 2), so that few or perfectly separated pixels give a finite, moderate slope
    instead of one that makes every confidence 0 or 1. The identity when the pixels cannot tell:
    no changed or no unchanged pixel, or a fit that would reverse the score's order (slope not
    above 0)."""
    changed, unchanged = int(histogram.changed.sum()), int(histogram.unchanged.sum())
    if not changed or not unchanged:
        return PlattScaling(), "not fitted: the pairs need changed and unchanged pixels"
    high, low = (changed + 1) / (changed + 2), 1 / (unchanged + 2)
    weight = (histogram.changed + histogram.unchanged).astype(np.float64)
    positive = histogram.changed * high + histogram.unchanged * low  # expected targets per bin
    design = np.stack([_CENTRES, np.ones_like(_CENTRES)], axis=1)
    params = np.array([1.0, 0.0])
    loss = _mean_cross_entropy(positive, weight, params)
    for _ in range(100):
        p = _sigmoid(design @ params)
        gradient = design.T @ (weight * p - positive)
        hessian = (design * (weight * p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2) * weight.sum()
        step = np.linalg.solve(hessian, gradient)
        for _ in range(30):  # halve the step until the loss does not rise
            candidate = params - step
            candidate_loss = _mean_cross_entropy(positive, weight, candidate)
            if candidate_loss <= loss:
                break
            step = step / 2
        else:
            break
        converged = loss - candidate_loss < 1e-12
        params, loss = candidate, candidate_loss
        if converged:
            break
    if params[0] <= 0:
        return PlattScaling(), f"not fitted: the best slope, {params[0]:.3g}, would reverse the score's order"
    return (PlattScaling(float(params[0]), float(params[1])),
            f"fitted by maximum likelihood on {changed:,} changed and {unchanged:,} unchanged pixels")


def _mean_cross_entropy(positive: np.ndarray, weight: np.ndarray, params: Sequence[float]) -> float:
    """Mean cross-entropy of targets (``positive`` of ``weight`` pixels per bin: counts, or smoothed)
    against ``sigmoid(slope · logit + intercept)`` of the bins' logits."""
    z = params[0] * _CENTRES + params[1]
    return float((positive @ np.logaddexp(0, -z) + (weight - positive) @ np.logaddexp(0, z)) / weight.sum())


def reliability(confidence: np.ndarray, label: np.ndarray) -> Dict[str, Any]:
    """How far ``confidence`` (0-1, valid pixels only) reads as the probability of ``label``: the
    Brier score (mean squared error), the expected calibration error (over
    :data:`RELIABILITY_BINS` equal-width bins, the pixel-weighted gap between the mean confidence
    and the share changed) and the bins themselves ([lower edge, pixels, mean confidence, share
    changed]; empty bins left out). Scores that are not numbers are left out."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    changed = np.asarray(label).astype(bool).ravel()
    finite = np.isfinite(confidence)
    confidence, changed = confidence[finite], changed[finite]
    index = np.minimum((confidence * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
    return _summary(np.bincount(index, minlength=RELIABILITY_BINS).astype(np.float64),
                    np.bincount(index, weights=confidence, minlength=RELIABILITY_BINS),
                    np.bincount(index, weights=changed, minlength=RELIABILITY_BINS),
                    float(np.sum((confidence - changed) ** 2)))


def pooled_reliability(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """:func:`reliability` of several results taken together, as if of all their pixels at once
    (from their bins and Brier scores)."""
    pixels, confidence, changed = (np.zeros(RELIABILITY_BINS) for _ in range(3))
    squared_error = 0.0
    for part in parts:
        for lower, count, mean, share in part["bins"]:
            k = int(round(lower * RELIABILITY_BINS))
            pixels[k] += count
            confidence[k] += count * mean
            changed[k] += count * share
        if part["bins"]:
            squared_error += part["brier"] * sum(count for _, count, _, _ in part["bins"])
    return _summary(pixels, confidence, changed, squared_error)


def _summary(pixels: np.ndarray, confidence: np.ndarray, changed: np.ndarray,
             squared_error: float) -> Dict[str, Any]:
    """Brier score, ECE and bins from each bin's pixel count, sum of confidence and count of
    changed pixels, and the sum of squared errors."""
    total = pixels.sum()
    if not total:
        return {"brier": None, "ece": None, "bins": []}
    bins = [[k / RELIABILITY_BINS, int(pixels[k]), float(confidence[k] / pixels[k]), float(changed[k] / pixels[k])]
            for k in range(RELIABILITY_BINS) if pixels[k]]
    return {"brier": float(squared_error / total), "ece": float(np.abs(confidence - changed).sum() / total),
            "bins": bins}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without exp's overflow (and its warning) where a trial slope makes z very
    negative, and without losing the small probabilities there."""
    return np.exp(-np.logaddexp(0.0, -z))


def _logit(score: np.ndarray) -> np.ndarray:
    clipped = np.clip(score, _SCORE_EPS, 1 - _SCORE_EPS)
    return np.log(clipped) - np.log1p(-clipped)
