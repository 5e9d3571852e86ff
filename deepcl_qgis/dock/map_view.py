"""The panel's "Map view only" area: the map canvas's extent, as the processing extent of the run."""
from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsReferencedRectangle
from qgis.gui import QgsMapCanvas


def view_extent(canvas: QgsMapCanvas) -> QgsReferencedRectangle:
    """What the map shows, in the map's CRS (Processing transforms it to the before image's)."""
    return QgsReferencedRectangle(canvas.extent(), canvas.mapSettings().destinationCrs())


def view_problem(extent: QgsReferencedRectangle, before: QgsRasterLayer, project: QgsProject) -> str:
    """Why the map view cannot be the area of a run on ``before``, or ''."""
    shown = extent
    if extent.crs().isValid() and before.crs().isValid():
        transform = QgsCoordinateTransform(extent.crs(), before.crs(), project.transformContext())
        shown = transform.transformBoundingBox(extent)
    if shown.isEmpty() or not shown.intersects(before.extent()):
        return (f"The map view shows none of the before image '{before.name()}': zoom to it "
                "(right-click the layer ▸ Zoom to Layer), or set Area to the whole before image.")
    return ""
