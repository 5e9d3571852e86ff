"""Loading a run's outputs into the project: styled, in one group named after the two inputs,
the change map and polygons above the confidence ramp and ticked, the ramp unticked."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer

from .. import threshold_scale
from ..layer_styling import OVER_THE_IMAGERY, RunGroup
from ..paths import style_path
from .layer_choice import RESULT_PROPERTY

# (Processing output, style, layer name), top of the group first.
OUTPUTS = [("POLYGONS", "polygons", "Change polygons"), ("CHANGE", "change", "Change"),
           ("CONFIDENCE", "confidence", "Confidence")]
CONFIDENCE_PROPERTY = "deepcl/confidence"  # the change layer knows its confidence map
THRESHOLD_PROPERTY = "deepcl/threshold"
RUN_PROPERTY = "deepcl/run"  # and its run (JSON), saved with the project: the slider follows it once reopened


def load_results(project: QgsProject, results: Dict[str, object], group_name: str,
                 threshold: float) -> Dict[str, QgsMapLayer]:
    """Add the outputs in ``results`` to a new group at the top of the tree (``group_name``, or
    "… (2)" when one of that name holds an earlier run's layers); role → layer."""
    # All opened before any is added: an output QGIS cannot open left a group with the others
    opened = [(output, style, _open(str(results[output]), _named(name, output, threshold), output))
              for output, style, name in OUTPUTS if results.get(output)]
    group = project.layerTreeRoot().insertGroup(0, RunGroup(group_name).name_in(project))
    loaded: Dict[str, QgsMapLayer] = {}
    for output, style, layer in opened:
        layer.loadNamedStyle(str(style_path(style)))
        layer.setCustomProperty(RESULT_PROPERTY, output)
        project.addMapLayer(layer, False)
        group.addLayer(layer).setItemVisibilityChecked(style in OVER_THE_IMAGERY)
        loaded[output] = layer
    if "CHANGE" in loaded:
        loaded["CHANGE"].setCustomProperty(CONFIDENCE_PROPERTY, str(results["CONFIDENCE"]))
        loaded["CHANGE"].setCustomProperty(THRESHOLD_PROPERTY, threshold)
    return loaded


def _named(name: str, output: str, threshold: float) -> str:
    """The polygons say their threshold: the slider re-classifies the change layer only."""
    return f"{name} (threshold {threshold_scale.label(threshold)})" if output == "POLYGONS" else name


def _open(path: str, name: str, output: str) -> QgsMapLayer:
    layer = QgsVectorLayer(path, name, "ogr") if output == "POLYGONS" else QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise OSError(f"QGIS cannot open the {name.lower()} output {path}")
    return layer


def point_change_layer_to(layer: QgsRasterLayer, path: Path, threshold: float) -> None:
    """Show another change map file in the same layer, keeping its name, style and place."""
    renderer = layer.renderer().clone()
    layer.setDataSource(str(path), layer.name(), "gdal")
    layer.setRenderer(renderer)
    layer.setCustomProperty(THRESHOLD_PROPERTY, threshold)
    layer.triggerRepaint()


def result_layers_in(project: QgsProject) -> List[QgsMapLayer]:
    """Every layer the panel loaded."""
    return [layer for layer in project.mapLayers().values() if layer.customProperty(RESULT_PROPERTY)]


def latest_change_layer(project: QgsProject) -> Optional[QgsRasterLayer]:
    """The change layer of the panel's run highest in the layer tree (the latest, unless moved)."""
    for node in project.layerTreeRoot().findLayers():
        layer = node.layer()
        if isinstance(layer, QgsRasterLayer) and layer.customProperty(RUN_PROPERTY):
            return layer
    return None


def change_layer(project: QgsProject, layer_id: str) -> Optional[QgsRasterLayer]:
    layer = project.mapLayer(layer_id)
    return layer if isinstance(layer, QgsRasterLayer) else None
