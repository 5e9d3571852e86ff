"""The one-line summaries the panel shows after a run and after a new threshold."""
from __future__ import annotations

from typing import Any, Dict, Optional

from .form import MAP_VIEW, POLYGONS, WHOLE_IMAGE
from .reclassify import ChangeCounts
from ..threshold_scale import label

M2_PER_HECTARE = 10_000.0
AREA_WORDS = {WHOLE_IMAGE: "", MAP_VIEW: " in the map view", POLYGONS: " inside the polygons"}  # after "Changed"


def changed_text(area_m2: Optional[float], percent: float, pixels: int) -> str:
    """'12.35 ha (4.56 %)', or pixels when the images carry no georeference."""
    if area_m2 is None:
        return f"{pixels:,} pixels ({percent:.2f} %; images not georeferenced, no area)"
    return f"{area_m2 / M2_PER_HECTARE:,.2f} ha ({percent:.2f} %)"


def duration_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


# A share of the image without data in either date worth telling: the changed percentage is of the
# rest, and a mostly cloudy date otherwise looks like a mostly unchanged scene.
UNSEEN_WORTH_TELLING = 0.05


def run_summary(results: Dict[str, Any], threshold: float, seconds: float, area: str = WHOLE_IMAGE,
                image_pixels: Optional[int] = None) -> str:
    """``image_pixels``: the change map's, for the share of the image not looked at."""
    changed = changed_text(results.get("CHANGED_AREA_M2"), float(results.get("CHANGED_PERCENT") or 0.0),
                           int(results.get("CHANGED_PIXELS") or 0))
    scale = int(results.get("INPUT_SCALE_USED") or 1)
    enlarged = f", images enlarged {scale}× for the network" if scale > 1 else ""
    unseen = 1 - int(results.get("VALID_PIXELS") or 0) / image_pixels if image_pixels and area == WHOLE_IMAGE else 0
    not_looked_at = (f"; {100 * unseen:.0f} % of the image has no data in one of the dates (clouds, no coverage) "
                     "and was not looked at" if unseen >= UNSEEN_WORTH_TELLING else "")
    return (f"Changed{AREA_WORDS[area]}: {changed} at threshold {label(threshold)}{enlarged}{not_looked_at}; "
            f"{duration_text(seconds)} on {results.get('DEVICE_USED') or 'the CPU'}.")


def threshold_summary(counts: ChangeCounts, threshold: float, run_seconds: float, area: str = WHOLE_IMAGE) -> str:
    changed = changed_text(counts.changed_area_m2, counts.changed_percent, counts.changed_pixels)
    return (f"Changed{AREA_WORDS[area]}: {changed} at threshold {label(threshold)} (re-classified; detection took "
            f"{duration_text(run_seconds)}).")
