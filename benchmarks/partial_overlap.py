"""Detection where the after image covers only part of the before image, as a swath edge or a
smaller acquisition does: the bundled model on each pair with its after image cut to the right half,
to the bottom-right 40 % corner and to the central half, scored against the label on the pixels both
images cover (the outputs are nodata elsewhere). Prints true and false positives, false negatives
and F1 pooled over the pairs per cut, beside the whole pair's, and the F1 of the reference: both
images cut to that window first, so that nothing outside it can weigh on the result.

    python -m benchmarks.partial_overlap ../shared/data/oscd

It uses only :func:`~deepcl_core.detect.detect_changes`, so another checkout's code is measured on
the same cuts with ``PYTHONPATH=OTHER_CHECKOUT python benchmarks/partial_overlap.py ../shared/data/oscd``
(run as a script: ``-m`` would put this checkout first).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

Cut = Callable[[int, int], Optional[List[int]]]  # (width, height) → srcWin of the after image, None: whole
CUTS: Dict[str, Cut] = {
    "whole": lambda w, h: None,
    "right half": lambda w, h: [w // 2, 0, w - w // 2, h],
    "corner 40 %": lambda w, h: [int(w * 0.6), int(h * 0.6), w - int(w * 0.6), h - int(h * 0.6)],
    "centre half": lambda w, h: [w // 4, h // 4, w // 2, h // 2],
}


def counts(change: np.ndarray, label: np.ndarray) -> Tuple[int, int, int]:
    """True positives, false positives, false negatives where ``change`` is not nodata (255)."""
    covered = change != 255
    changed, truth = change[covered] == 1, label[covered]
    return int((changed & truth).sum()), int((changed & ~truth).sum()), int((~changed & truth).sum())


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(1, 2 * tp + fp + fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a folder of pair folders (before.tif, after.tif, label.tif)")
    args = parser.parse_args()
    totals = {name: np.zeros(3, np.int64) for name in CUTS}
    cut_first = {name: np.zeros(3, np.int64) for name in CUTS}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        outputs = DetectOutputs(change=work / "change.tif", confidence=work / "confidence.tif")

        def detected(before: Path, after: Path) -> np.ndarray:
            detect_changes(before, after, outputs, DetectOptions(overwrite=True))
            return gdal.Open(str(outputs.change)).ReadAsArray()

        for pair in sorted(p for p in args.root.iterdir() if (p / "label.tif").is_file()):
            before = gdal.Open(str(pair / "before.tif"))
            label = gdal.Open(str(pair / "label.tif")).ReadAsArray() > 0
            for name, cut in CUTS.items():
                window = cut(before.RasterXSize, before.RasterYSize)
                if window is None:
                    totals[name] += counts(detected(pair / "before.tif", pair / "after.tif"), label)
                    continue
                for date in ("before", "after"):
                    gdal.Translate(str(work / f"{date}_cut.tif"), str(pair / f"{date}.tif"), srcWin=window)
                totals[name] += counts(detected(pair / "before.tif", work / "after_cut.tif"), label)
                x, y, w, h = window
                cut_first[name] += counts(detected(work / "before_cut.tif", work / "after_cut.tif"),
                                          label[y:y + h, x:x + w])
    print(f"{'after image':<14}{'TP':>9}{'FP':>9}{'FN':>9}{'F1':>8}{'F1, both cut first':>21}")
    for name, (tp, fp, fn) in totals.items():
        reference = f"{f1(*cut_first[name]):.3f}" if cut_first[name].any() else "-"
        print(f"{name:<14}{tp:>9}{fp:>9}{fn:>9}{f1(tp, fp, fn):>8.3f}{reference:>21}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
