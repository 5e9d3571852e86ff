"""The main job on the bundled sample pair: detection with the bundled model, a summary with the
changed area and the accuracy against the sample's reference label, and a PNG quick-look."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.detect import DetectOptions, DetectOutputs, bundled_model_path, detect_changes  # noqa: E402
from deepcl_core.errors import DeepCLError  # noqa: E402
from deepcl_core.metrics import Confusion  # noqa: E402
from deepcl_core.progress import TerminalProgress  # noqa: E402
from deepcl_core.quicklook import write_quicklook  # noqa: E402

SAMPLE = ROOT / "resources" / "sample"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not bundled_model_path().is_file():
        print("No trained model is bundled yet (resources/models/deepcl_default.pt is missing): "
              "the demo needs one. Train one with 'deepcl train' (see README).", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    before, after = SAMPLE / "hongkong_before.tif", SAMPLE / "hongkong_after.tif"
    outputs = DetectOutputs(change=args.out / "change.tif", confidence=args.out / "confidence.tif",
                            distance=args.out / "distance.tif", polygons=args.out / "changes.gpkg")
    progress = TerminalProgress("demo")
    try:
        result = detect_changes(before, after, outputs, DetectOptions(device=args.device, overwrite=True, min_area=500),
                                progress=progress)
    except DeepCLError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.finish()
    change = gdal.Open(str(outputs.change)).ReadAsArray()
    label = gdal.Open(str(SAMPLE / "hongkong_label.tif")).ReadAsArray()
    accuracy = Confusion.of(change == 1, label > 0, valid=change != 255).metrics()
    quicklook = write_quicklook(before, after, outputs.confidence, outputs.change, args.out / "quicklook.png",
                                reference=SAMPLE / "hongkong_label.tif")
    print(json.dumps({
        "outputs": {k: str(v) for k, v in vars(outputs).items()} | {"quicklook": str(quicklook)},
        "changed_area_ha": round(result.changed_area_m2 / 1e4, 2),
        "changed_percent": round(result.changed_percent, 2),
        "change_polygons": result.polygons,
        "seconds": round(result.seconds, 2), "device": result.device,
        "against_reference_label": {k: round(accuracy[k], 3) for k in ("precision", "recall", "f1", "iou", "kappa")},
    }, indent=2))
    print(f"Changed area: {result.changed_area_m2 / 1e4:.1f} ha ({result.changed_percent:.1f} % of the "
          f"valid pixels), F1 against the reference label {accuracy['f1']:.3f}. Quick-look: {quicklook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
