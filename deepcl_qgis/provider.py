"""The DeepCL Processing provider (id ``deepcl``)."""
from __future__ import annotations

from typing import List

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.detect_changes import DetectChangesAlgorithm
from .algorithms.evaluate_model import EvaluateModelAlgorithm
from .algorithms.train_model import TrainModelAlgorithm
from .dependencies import dependency_problem
from .paths import icon


class DeepCLProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "deepcl"

    def name(self) -> str:
        return "DeepCL"

    def longName(self) -> str:  # noqa: N802 (Qt API)
        return "DeepCL change detection"

    def icon(self) -> QIcon:
        return icon("deepcl")

    def loadAlgorithms(self) -> None:  # noqa: N802
        # The algorithms are listed even without torch: running one explains how to install it.
        for algorithm in (DetectChangesAlgorithm(), TrainModelAlgorithm(), EvaluateModelAlgorithm()):
            self.addAlgorithm(algorithm)

    def supportedOutputRasterLayerExtensions(self) -> List[str]:  # noqa: N802
        return ["tif"]  # the engine writes tiled, compressed GeoTIFFs

    def supportedOutputVectorLayerExtensions(self) -> List[str]:  # noqa: N802
        return ["gpkg"]  # change polygons are written as GeoPackage

    def supportsNonFileBasedOutput(self) -> bool:  # noqa: N802
        return False  # the engine writes files: no memory layer, database table or other provider's source

    def warningMessage(self) -> str:  # noqa: N802
        problem = dependency_problem()
        return problem.splitlines()[0] if problem else ""
