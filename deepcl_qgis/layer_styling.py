"""Styling and grouping of the layers an algorithm loads into the project when it finishes.

Processing loads output layers after ``processAlgorithm`` returns; a post-processor attached to
each layer's load details applies our .qml style and moves the layer into one group per run,
so a batch of pairs gives one tidy group per pair."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple

from qgis.core import (QgsLayerTreeGroup, QgsLayerTreeLayer, QgsLayerTreeNode, QgsMapLayer, QgsProcessingContext,
                       QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface, QgsProject)

from .paths import style_path

# Processing keeps only a C++ pointer to a layer's post-processor, and runs it after the algorithm
# copy that created it is deleted (QgsProcessingAlgorithm.run works on a copy). The Python objects
# must outlive both, so they are kept here; each is a few bytes and one is made per loaded layer.
_KEEP_ALIVE: List["StyleAndGroup"] = []
# The outputs drawn on top of their group and ticked when loaded: the change map (unchanged pixels
# transparent) and the polygons, over the imagery. The confidence and distance ramps are opaque and
# would hide the imagery the change is seen against; they are loaded below them, unticked.
OVER_THE_IMAGERY = ("change", "polygons")
# A run's layers from the top of its group down, whatever order Processing loads them in (it
# follows the output files' names): the polygons' outlines over the change map they were made from.
STACKING_ORDER = ("polygons", "change", "confidence", "distance")
RANK_PROPERTY = "deepcl/rank"
GROUP_PREFIX = "DeepCL changes: "


def run_group_name(names: Tuple[str, str, str]) -> str:
    """"DeepCL changes: " and the pair's title (:func:`pair_names`, :func:`pair_title`)."""
    return GROUP_PREFIX + pair_title(names)


def pair_names(before_name: str, after_name: str, before_source: str, after_source: str = "") -> Tuple[str, str, str]:
    """(where, before, after): what tells a run's pair apart. The layers' names, with the before
    file's folder as ``where`` when they are named only by their role (a pair folder's before.tif and
    after.tif, as the batch dialog and a folder of pairs give them); each layer's folder instead of
    two equal names (two Sentinel-2 products' MTD_MSIL2A, whose SAFE folders name their dates), but
    for folders Processing named at random (two steps' OUTPUT in a graphical model): the name, and
    the roles."""
    if (before_name.lower(), after_name.lower()) == ("before", "after"):
        return _folder_of(before_source), before_name, after_name
    if before_name == after_name:
        folders = [_folder_of(source) for source in (before_source, after_source)]
        if all(folders) and not any(map(_in_processing_temporary_folder, (before_source, after_source))):
            return "", folders[0], folders[1]
        return before_name, "before", "after"
    return "", before_name, after_name


def pair_title(names: Tuple[str, str, str]) -> str:
    """"before → after", or "where (before → after)"."""
    where, before, after = names
    return f"{where} ({before} → {after})" if where else f"{before} → {after}"


def _folder_of(source: str) -> str:
    return os.path.basename(os.path.dirname(source.split("|")[0]))


def _in_processing_temporary_folder(source: str) -> bool:
    """Whether ``source`` lies where Processing writes a step's output, in a folder named at random
    (processing_XXXXXX/<32 hex digits>/OUTPUT.tif), of this QGIS session or an earlier one."""
    folder = Path(source.split("|")[0]).parent
    return bool(_RANDOM_FOLDER.fullmatch(folder.name)) and folder.parent.name.startswith("processing_")


_RANDOM_FOLDER = re.compile(r"[0-9a-f]{32}")


class RunGroup:
    """The group of one run's layers: named ``base``, or ``base (2)``, ``(3)``… when a group of that
    name holds an earlier run's layers (the same pair run again, e.g. at another threshold), so
    that two runs' equally named layers never mix. Chosen when the first layer is placed, in the
    main thread, which owns the layer tree."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.name = ""

    def name_in(self, project: QgsProject) -> str:
        if not self.name:
            root, number = project.layerTreeRoot(), 1
            self.name = self.base
            while root.findGroup(self.name) is not None:
                number += 1
                self.name = f"{self.base} ({number})"
        return self.name

    def is_of_the_same_pair(self, node: QgsLayerTreeNode) -> bool:
        """Whether ``node`` is a group of a run of this run's pair: named ``base`` or ``base (n)``."""
        return isinstance(node, QgsLayerTreeGroup) and (
            node.name() == self.base or re.fullmatch(re.escape(self.base) + r" \(\d+\)", node.name()) is not None)


# Marks a layer this module placed: Processing hands an earlier run's layer of the same file to
# the next run that writes that file, rather than loading it anew.
PLACED_PROPERTY = "deepcl/placed"


class StyleAndGroup(QgsProcessingLayerPostProcessorInterface):
    """Loads ``style`` into the layer and moves the layer into the run's group; a layer of an
    earlier run that wrote the same file is reloaded, and stays where it is if that run was of the
    same pair."""

    def __init__(self, style: Path, group: RunGroup, rank: int, shown: bool = True) -> None:
        super().__init__()
        self.style = style
        self.group = group
        self.rank = rank  # in STACKING_ORDER
        self.shown = shown  # ticked in the layer tree

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 (Qt API)
                         feedback: QgsProcessingFeedback) -> None:
        project = context.project() or QgsProject.instance()
        if layer.customProperty(PLACED_PROPERTY):  # the file was replaced under QGIS's open handle
            layer.reload()
            layer.triggerRepaint()
            # The same pair again (another threshold) keeps its group. Another pair's run into the
            # same files (batch rows with alike autofilled names) now shows that pair: its group
            # takes the layer, or the earlier pair's group would hold this pair's maps.
            node = project.layerTreeRoot().findLayer(layer.id())
            if node is None or self.group.is_of_the_same_pair(node.parent()):
                return
        else:
            layer.setCustomProperty(PLACED_PROPERTY, True)
            self._apply_style(layer, feedback)
        move_into_group(project, layer, self.group.name_in(project), self.rank, self.shown)

    def _apply_style(self, layer: QgsMapLayer, feedback: QgsProcessingFeedback) -> None:
        if self.style.is_file():
            message, ok = layer.loadNamedStyle(str(self.style))
            if not ok:
                feedback.pushInfo(f"Could not apply the style {self.style.name}: {message}")
            layer.triggerRepaint()


def move_into_group(project: QgsProject, layer: QgsMapLayer, group_name: str, rank: int,
                    shown: bool = True) -> None:
    """Move the layer's tree node into ``group_name`` (created at the top of the layer's current
    parent group when missing, or beside it when that is another run's group), below the group's
    layers of a lower ``rank`` and above the others; ticked when ``shown``. A run's group that this
    leaves empty is removed: it would name a pair whose maps are gone."""
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    if node is None:
        return
    node.setItemVisibilityChecked(shown)
    parent = node.parent() or root
    left_run = parent.name().startswith(GROUP_PREFIX)  # the root's name is empty
    home = (parent.parent() or root) if left_run else parent  # runs' groups side by side, never nested
    group = home.findGroup(group_name) or home.insertGroup(0, group_name)
    if node.parent() is group:
        return
    layer.setCustomProperty(RANK_PROPERTY, rank)
    ranks = [int(child.layer().customProperty(RANK_PROPERTY, rank)) if isinstance(child, QgsLayerTreeLayer) and
             child.layer() is not None else rank for child in group.children()]
    group.insertChildNode(sum(1 for other in ranks if other < rank), node.clone())
    parent.removeChildNode(node)
    if left_run and not parent.children():
        (parent.parent() or root).removeChildNode(parent)


def attach_post_processors(context: QgsProcessingContext, outputs: dict, group_name: str) -> None:
    """For each ``{path: (style name, layer name, the output's description)}`` that Processing will
    load, set its name (unless a graphical model named it: Processing's own is the description) and
    its post-processor (style and group): in :data:`STACKING_ORDER`, :data:`OVER_THE_IMAGERY` ticked,
    the ramps unticked."""
    group = RunGroup(group_name)
    for path, (style, layer_name, description) in outputs.items():
        if not path or not context.willLoadLayerOnCompletion(path):
            continue
        details = context.layerToLoadOnCompletionDetails(path)
        if details.name in ("", description):
            details.name = layer_name
            details.forceName = True
        processor = StyleAndGroup(style_path(style), group, STACKING_ORDER.index(style),
                                  shown=style in OVER_THE_IMAGERY)
        _KEEP_ALIVE.append(processor)
        details.setPostProcessor(processor)
