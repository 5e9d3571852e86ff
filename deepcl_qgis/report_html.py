"""The evaluation's HTML report: one table a user can open in a browser or the Processing results viewer."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Dict, Sequence, Tuple

from .engine import core_module

_LABELS = [("precision", "Precision"), ("recall", "Recall"), ("f1", "F1 score"), ("iou", "IoU (change)"),
           ("oa", "Overall accuracy"), ("kappa", "Cohen's kappa")]
_COUNTS = [("tp", "Changed, found"), ("fp", "False alarms"), ("fn", "Missed changes"), ("tn", "Unchanged, correct")]


# Why a ratio has no value (the engine's metrics(undefined=None)): no pixels to divide by, which for a
# map that rightly finds no change where there is none is no failure, as a 0 would say.
_UNDEFINED = {"precision": "nothing detected as changed", "recall": "no change in the reference",
              "f1": "no change in the map or the reference", "iou": "no change in the map or the reference"}


def metric_text(key: str, metrics: Dict[str, float]) -> str:
    """``metrics[key]`` to four decimals, or why it has no value."""
    value = metrics[key]
    return f"n/a ({_UNDEFINED[key]})" if value is None else f"{value:.4f}"


def write_report(path: Path, metrics: Dict[str, float], change_name: str, reference_name: str,
                 details: Sequence[Tuple[str, str]] = ()) -> None:
    """The report; ``details`` are (label, text) lines under the names, e.g. the model run's threshold."""
    rows = "".join(f"<tr><td>{label}</td><td>{metric_text(key, metrics)}</td></tr>" for key, label in _LABELS)
    counts = "".join(f"<tr><td>{label}</td><td>{int(metrics[key]):,}</td></tr>" for key, label in _COUNTS)
    lines = "".join(f"<br>{html.escape(label)}: {html.escape(value)}" for label, value in details)
    text = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>DeepCL evaluation</title></head><body>"
            f"<h1>DeepCL evaluation</h1><p>Change map: {html.escape(change_name)}<br>"
            f"Reference: {html.escape(reference_name)}{lines}</p>"
            f"<h2>Accuracy of the change class</h2><table border='1' cellpadding='4'>{rows}</table>"
            f"<h2>Pixels</h2><table border='1' cellpadding='4'>{counts}</table>{_reliability(metrics)}</body></html>")
    # Renamed onto its name once written: a link given as the report is replaced, not what it points to
    core_module("outputs").write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def _reliability(metrics: Dict[str, float]) -> str:
    """The confidence's Brier score and calibration error, when the evaluation ran the model."""
    if metrics.get("brier") is None:
        return ""
    return ("<h2>The confidence as a probability</h2><table border='1' cellpadding='4'>"
            f"<tr><td>Brier score</td><td>{metrics['brier']:.4f}</td></tr>"
            f"<tr><td>Expected calibration error</td><td>{metrics['ece']:.4f}</td></tr></table>"
            "<p>Lower is better; see the model card for the model's own pairs.</p>")
