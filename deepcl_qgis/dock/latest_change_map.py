"""The latest run's change layer, following the panel's threshold after the run: when the slider
rests, the run's confidence map is re-classified in a task (:mod:`.reclassify_task`) and the layer
points to the new map; back at the run's own threshold it shows the run's map again.

A re-classified map the layer moves on from is deleted (a slider drag would pile them up), unless a
layer of the project or a project file saved in this session (or opened) still refers to it: a saved
project must open with its change layer. Only maps in the run's own folder are ever deleted. What a
saved file refers to is read from the file itself, not remembered at the save, so a Save As keeps
both files' maps, saving over a file lets its earlier map go, and a save that failed protects what
the file on disk still holds."""
from __future__ import annotations

import json
import math
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Set

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QObject, QTimer

from .. import threshold_scale
from . import result_layers
from .form import WHOLE_IMAGE
from .reclassify import ChangeCounts
from .reclassify_task import ReclassifyTask
from .summary import AREA_WORDS, threshold_summary

RECLASSIFY_DELAY_MS = 300  # a slider drag re-classifies once, when it rests
# Cancelled re-classifications, kept until they end: a task whose Python object is collected ends
# without its finished(), and its map was left behind.
_ENDING_TASKS: Set[ReclassifyTask] = set()


class LatestChangeMap(QObject):
    """``threshold()`` is the panel's; the summaries go to ``show_summary`` and failures to
    ``show_error``."""

    def __init__(self, project: QgsProject, threshold: Callable[[], float], show_summary: Callable[[str], None],
                 show_error: Callable[[str], None], parent: QObject) -> None:
        super().__init__(parent)
        self.project = project
        self._threshold, self._show_summary, self._show_error = threshold, show_summary, show_error
        self.layer_id = ""  # none before the first run
        self.task: Optional[ReclassifyTask] = None
        self._task_layer_id = ""  # the change layer the running task re-classifies for
        self.run_seconds = 0.0
        self.run_area = WHOLE_IMAGE
        self.run_map, self.run_threshold = Path(), -1.0  # shown again at its threshold
        self.run_summary = ""
        self.run_polygons = False
        self._left_behind: Set[Path] = set()  # re-classified maps the layer moved on from, kept while referred to
        self._saved_projects: Set[str] = set()  # the files the project was saved to in this session, or opened from
        project.projectSaved.connect(self._on_project_saved)
        self._timer = QTimer(self, singleShot=True, interval=RECLASSIFY_DELAY_MS)
        self._timer.timeout.connect(self.reclassify_now)

    def show_run(self, layer: QgsRasterLayer, threshold: float, seconds: float, area: str, summary: str,
                 polygons: bool = False) -> None:
        """A run's change layer, made at ``threshold``, is now the one to follow the slider (which may
        have moved while the run ran); ``polygons``: the run made change polygons, which stay at it.
        The layer keeps what it needs to follow it again in the saved project (:meth:`adopt`)."""
        run = {"map": layer.source(), "threshold": threshold, "seconds": seconds, "area": area, "summary": summary,
               "polygons": polygons}
        layer.setCustomProperty(result_layers.RUN_PROPERTY, json.dumps(run))
        self._follow(layer, run)
        self._show_summary(summary)
        self._timer.start()

    def adopt(self, layer: QgsRasterLayer) -> None:
        """``layer``, the change layer of a run (:meth:`show_run`) in a project just opened, is the one
        to follow the slider; nothing changes until it moves. The maps of the project's file stay
        while the layer moves on: they are its file's. ValueError: it keeps no run it can follow."""
        self._follow(layer, _checked_run(layer))
        if self.project.fileName():
            self._saved_projects.add(self.project.fileName())

    def _follow(self, layer: QgsRasterLayer, run: Dict[str, Any]) -> None:
        self.layer_id = layer.id()
        self.run_map, self.run_threshold = Path(run["map"]), float(run["threshold"])
        self.run_seconds, self.run_area, self.run_summary = float(run["seconds"]), run["area"], run["summary"]
        self.run_polygons = bool(run["polygons"])

    def layer(self) -> Optional[QgsRasterLayer]:
        """The change layer, while it is in the project."""
        return result_layers.change_layer(self.project, self.layer_id) if self.layer_id else None

    def threshold_moved(self) -> None:
        if self.layer() is not None:
            self._timer.start()

    def stop(self) -> None:
        """No re-classification is started, and one running is cancelled and ends without the panel
        (which may be going: the plugin unloads), its map deleted if it was written all the same."""
        self._timer.stop()
        if self.task is not None:
            task, self.task = self.task, None
            _ENDING_TASKS.add(task)
            task.done = partial(_discard, task)
            task.cancel()

    def forget(self) -> None:
        """No change layer to follow (the project was closed); a re-classification running ends unseen."""
        self.stop()
        self.layer_id = self.run_summary = ""

    def reclassify_now(self) -> None:
        """Rewrite the change map at the panel's threshold (in a task)."""
        layer = self.layer()
        if layer is None:
            return
        if self.task is not None:
            self._timer.start()  # one is running: try again when it is done
            return
        threshold = self._threshold()
        if abs(float(layer.customProperty(result_layers.THRESHOLD_PROPERTY, -1)) - threshold) < 1e-9:
            return
        if abs(self.run_threshold - threshold) < 1e-9:  # back where the run was: its own map, no copy
            self._point_to(layer, self.run_map, threshold)
            self._show_summary(self.run_summary)
            return
        confidence = Path(layer.customProperty(result_layers.CONFIDENCE_PROPERTY))
        target = confidence.with_name(f"change_t{threshold_scale.label(threshold)}_{time.strftime('%H%M%S')}.tif")
        self.task = ReclassifyTask(confidence, target, threshold, self._on_reclassified)
        self._task_layer_id = layer.id()
        QgsApplication.taskManager().addTask(self.task)

    def _on_reclassified(self, counts: Optional[ChangeCounts], path: Path, error: str) -> None:
        task, self.task = self.task, None
        # A run that ended meanwhile made another layer the latest: this map is of the earlier run's
        # confidence, and shown on the new layer it would pass off that run's change as this one's.
        layer = self.layer() if self._task_layer_id == self.layer_id else None
        if counts is None or layer is None:
            if counts is not None:  # the change layer was removed or superseded meanwhile: its new map is no one's
                path.unlink(missing_ok=True)
            if error:
                self._show_error(error)
            return
        self._point_to(layer, path, task.threshold)
        polygons = (f" The change polygons stay at the run's threshold, {threshold_scale.label(self.run_threshold)}."
                    if self.run_polygons else "")
        self._show_summary(threshold_summary(counts, task.threshold, self.run_seconds, self.run_area) + polygons)

    def _point_to(self, layer: QgsRasterLayer, path: Path, threshold: float) -> None:
        previous = Path(layer.source())
        result_layers.point_change_layer_to(layer, path, threshold)
        # A re-classification, of this run's folder
        if previous.name.startswith("change_t") and previous.resolve().parent == self.run_map.resolve().parent:
            self._left_behind.add(previous)
        self._delete_unreferenced_maps()

    def _on_project_saved(self) -> None:
        self._saved_projects.add(self.project.fileName())

    def _delete_unreferenced_maps(self) -> None:
        """Delete the maps left behind that no layer of the project and no project saved in this
        session refers to (a saved project that cannot be read may refer to any)."""
        unshown = self._left_behind - {Path(layer.source()) for layer in self.project.mapLayers().values()}
        saved = [_project_xml(name) for name in self._saved_projects] if unshown else []
        for path in unshown:
            if not any(xml is None or path.name in xml for xml in saved):
                path.unlink(missing_ok=True)
        self._left_behind = {path for path in self._left_behind if path.exists()}


def _checked_run(layer: QgsRasterLayer) -> Dict[str, Any]:
    """The run a change layer keeps (:meth:`LatestChangeMap.show_run`), or ValueError: a project moved
    since (its maps are elsewhere now), or properties edited by hand, are not followed. Paths are
    compared resolved: QGIS reads a project's sources back absolute, with links followed."""
    folder = Path(layer.source()).resolve().parent
    try:
        run = json.loads(layer.customProperty(result_layers.RUN_PROPERTY))
        confidence = Path(layer.customProperty(result_layers.CONFIDENCE_PROPERTY)).resolve()
        ok = (isinstance(run["map"], str) and isinstance(run["summary"], str) and run["area"] in AREA_WORDS
              and isinstance(run["polygons"], bool) and 0 < float(run["threshold"]) < 1
              and 0 < float(layer.customProperty(result_layers.THRESHOLD_PROPERTY)) < 1
              and math.isfinite(float(run["seconds"])) and Path(run["map"]).resolve().parent == folder
              and confidence.parent == folder and confidence.is_file())
    except (AttributeError, KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"the change layer {layer.name()} keeps no run of its folder {folder}")
    return run


def _discard(task: ReclassifyTask, counts: Optional[ChangeCounts], path: Path, error: str) -> None:
    """The end of a re-classification no one waits for any more."""
    _ENDING_TASKS.discard(task)
    if counts is not None:
        path.unlink(missing_ok=True)


def _project_xml(name: str) -> Optional[str]:
    """The XML of the project saved as ``name`` (a .qgs, or the .qgs in a .qgz); "" where there is no
    such file (deleted since, or a save that failed), None where it cannot be read (e.g. a project
    kept in a database): it may refer to any map."""
    if QgsApplication.projectStorageRegistry().projectStorageFromUri(name) is not None:
        return None
    try:
        if not zipfile.is_zipfile(name):
            return Path(name).read_text(errors="replace")
        with zipfile.ZipFile(name) as archive:
            return "".join(archive.read(member).decode(errors="replace") for member in archive.namelist()
                           if member.endswith(".qgs"))
    except FileNotFoundError:
        return ""
    except (OSError, zipfile.BadZipFile):
        return None
