"""The threshold slider's scale: round values, finer where thresholds are small. On 10 m imagery a
model's threshold may lie near 0.01 (the network's own score there; the bundled model's calibrated
confidence puts it at 0.074), where steps of 0.01 would double or halve it; on aerial imagery it
lies near 0.2-0.5, where steps of 0.01 are fine enough. The panel puts the model's own threshold
at the stop nearest it. Processing's threshold parameter takes the same range: the panel runs it
with the slider's value."""
from __future__ import annotations

from typing import Tuple


def _steps(start: int, stop: int, step: int) -> Tuple[float, ...]:
    """start, start + step, … below stop, all in thousandths."""
    return tuple(round(k / 1000, 3) for k in range(start, stop, step))


# 0.001-0.019 by 0.001, 0.020-0.095 by 0.005, 0.10-0.99 by 0.01.
THRESHOLDS = _steps(1, 20, 1) + _steps(20, 100, 5) + _steps(100, 1000, 10)


def threshold_at(position: int) -> float:
    """The threshold at slider ``position`` (0 to ``len(THRESHOLDS) - 1``)."""
    return THRESHOLDS[max(0, min(len(THRESHOLDS) - 1, position))]


def position_of(threshold: float) -> int:
    """The slider position whose threshold lies nearest ``threshold``."""
    return min(range(len(THRESHOLDS)), key=lambda i: abs(THRESHOLDS[i] - threshold))


def label(threshold: float) -> str:
    """As few decimals as the value needs, at least two: 0.30, 0.07, 0.025, 0.004; a model's own
    threshold below the slider's first stop in two significant digits (0.00042, not 0.00)."""
    if 0 < threshold < THRESHOLDS[0]:
        return f"{threshold:.2g}"
    text = f"{threshold:.3f}"
    return text[:-1] if text.endswith("0") else text
