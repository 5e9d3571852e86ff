"""Binary change-detection accuracy from a confusion matrix: precision, recall, F1, IoU, overall
accuracy and Cohen's kappa. Confusion counts add up across tiles and pairs (pooled metrics)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Union

import numpy as np


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> "Confusion":
        """Counts for boolean-like arrays of one shape; pixels outside ``valid`` are not counted."""
        predicted = np.asarray(predicted).astype(bool)
        reference = np.asarray(reference).astype(bool)
        if valid is not None:  # as a mask, also of 0s and 1s, which would index by position
            valid = np.asarray(valid).astype(bool)
            predicted, reference = predicted[valid], reference[valid]
        tp = int(np.count_nonzero(predicted & reference))
        fp = int(np.count_nonzero(predicted & ~reference))
        fn = int(np.count_nonzero(~predicted & reference))
        return cls(tp, fp, fn, int(predicted.size) - tp - fp - fn)

    @classmethod
    def from_metrics(cls, metrics: Dict[str, float]) -> "Confusion":
        """The counts back from a :meth:`metrics` dict (evaluation reports carry tp, fp, fn, tn)."""
        return cls(*(int(metrics[key]) for key in ("tp", "fp", "fn", "tn")))

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def metrics(self, undefined: Optional[float] = 0.0) -> Dict[str, Optional[Union[float, int]]]:
        """Precision, recall, F1 and IoU of the change class, OA and kappa. A ratio of the change
        class whose denominator is 0 (precision when nothing is predicted changed; all four where
        neither prediction nor reference holds change) is ``undefined``: 0 for choosing thresholds
        and epochs, None in reports, where an F1 of 0 for a map that rightly finds no change would
        read as a failure. Kappa is 1 when prediction and reference agree perfectly on at least one
        pixel; no pixel at all is no agreement, 0 as OA is, not a perfect one."""
        tp, fp, fn, tn, n = self.tp, self.fp, self.fn, self.tn, self.total
        precision = _ratio(tp, tp + fp, undefined)
        recall = _ratio(tp, tp + fn, undefined)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn, undefined)
        iou = _ratio(tp, tp + fp + fn, undefined)
        oa = _ratio(tp + tn, n)
        expected = _ratio((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n)
        kappa = 1.0 if fp + fn == 0 and n else _ratio(oa - expected, 1 - expected)
        return {"precision": precision, "recall": recall, "f1": f1, "iou": iou, "oa": oa, "kappa": kappa,
                **asdict(self)}  # whole counts, as Processing gives them


def _ratio(numerator: float, denominator: float, undefined: Optional[float] = 0.0) -> Optional[float]:
    return float(numerator) / float(denominator) if denominator else undefined


def pooled_by_group(per_pair: Dict[str, Dict[str, float]], group_of: Dict[str, str]) -> Dict[str, Confusion]:
    """Per-pair metrics dicts pooled over the pixels of each group (e.g. data set), by pair name."""
    pooled: Dict[str, Confusion] = {}
    for name, metrics in per_pair.items():
        group = group_of[name]
        pooled[group] = pooled.get(group, Confusion()) + Confusion.from_metrics(metrics)
    return pooled
