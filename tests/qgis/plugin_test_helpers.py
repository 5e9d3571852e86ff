"""Small helpers shared by the plugin tests: running an algorithm, reading rasters and drawing
polygons over them."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np
import pytest
from osgeo import gdal, ogr

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("DEEPCL_DATA") or REPO.parent / "shared" / "data")


def pair(dataset: str, name: str) -> Path:
    folder = DATA / dataset / name
    if not folder.is_dir():
        pytest.skip(f"test data missing: {folder}")
    return folder


def image(folder: Path, role: str) -> str:
    """The pair's raster for ``role`` (sidecars such as .aux.xml are skipped)."""
    return str(next(p for p in sorted(folder.glob(f"{role}.*")) if p.suffix.lower() in {".tif", ".png", ".jpg"}))


def run(algorithm: str, parameters: Dict[str, Any], feedback: Any = None) -> Dict[str, Any]:
    import processing
    from qgis.core import QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return processing.run(algorithm, parameters, feedback=feedback, context=context)


def error_recording_feedback() -> Any:
    """A Processing feedback that keeps the errors reported to it, in ``.reported``, the warnings,
    in ``.warnings``, and the information lines, in ``.infos``."""
    from qgis.core import QgsProcessingFeedback

    class ErrorRecordingFeedback(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.reported: list = []
            self.warnings: list = []
            self.infos: list = []

        def pushInfo(self, info: str) -> None:  # noqa: N802 (Qt's name)
            self.infos.append(info)

        def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802 (Qt's name)
            self.reported.append(error)

        def pushWarning(self, warning: str) -> None:  # noqa: N802 (Qt's name)
            self.warnings.append(warning)

    return ErrorRecordingFeedback()


def read(path: str | Path) -> np.ndarray:
    dataset = gdal.Open(str(path))
    assert dataset is not None, f"cannot open {path}"
    return dataset.GetRasterBand(1).ReadAsArray()


def label_polygons(label: str | Path, target: Path, crs: str = "") -> str:
    """The label's changed pixels as polygons, layer ``changed`` of a GeoPackage at ``target``,
    reprojected to ``crs`` if given."""
    dataset = gdal.Open(str(label))
    memory = gdal.GetDriverByName("Memory").Create("", 0, 0, 0, gdal.GDT_Unknown)  # VectorTranslate's source
    layer = memory.CreateLayer("changed", srs=dataset.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    band = dataset.GetRasterBand(1)
    gdal.Polygonize(band, band, layer, 0)  # the band as its own mask: only changed pixels
    assert layer.GetFeatureCount() > 0
    gdal.VectorTranslate(str(target), memory, format="GPKG", layerName="changed",
                         **({"dstSRS": crs, "reproject": True} if crs else {}))
    return str(target)


def square_polygons(raster: str | Path, squares: Iterable[Tuple[float, float, float]]) -> List[str]:
    """The squares given as (column, row, side) in pixels of ``raster`` (on it or off it), as WKT
    polygons in its georeference."""
    x0, dx, _, y0, _, dy = gdal.Open(str(raster)).GetGeoTransform()
    polygons = []
    for column, row, side in squares:
        corners = [(x0 + c * dx, y0 + r * dy) for c, r in ((column, row), (column + side, row),
                                                           (column + side, row + side), (column, row + side))]
        polygons.append("POLYGON((" + ",".join(f"{x!r} {y!r}" for x, y in corners + corners[:1]) + "))")
    return polygons


def squares_package(raster: str | Path, squares: Iterable[Tuple[float, float, float]], target: Path,
                    layer_name: str) -> Path:
    """A layer ``layer_name`` of the squares (see ``square_polygons``), in the raster's CRS, added to
    the GeoPackage at ``target`` (made if missing)."""
    driver = ogr.GetDriverByName("GPKG")
    package = driver.Open(str(target), 1) if target.exists() else driver.CreateDataSource(str(target))
    layer = package.CreateLayer(layer_name, srs=gdal.Open(str(raster)).GetSpatialRef(), geom_type=ogr.wkbPolygon)
    for wkt in square_polygons(raster, squares):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    feature = layer = package = None  # written as it closes
    return target


def check_message(algorithm_id: str, parameters: Dict[str, Any]) -> str:
    """The message ``checkParameterValues`` gives (asserting that it refuses)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, message = algorithm.checkParameterValues(parameters, context)
    assert not ok, "the parameters were accepted"
    return message


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    """Process Qt events (tasks, processes and timers report through them) until ``condition`` holds."""
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        QCoreApplication.processEvents()
        time.sleep(0.01)


def process_events_for(seconds: float) -> None:
    """Let Qt deliver what comes within ``seconds``: a signal that must not come has had its chance."""
    until = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() > until)


def fake_nvidia_smi(folder: Path, script: str = "echo '| NVIDIA-SMI 560.35   Driver Version: 560.35   "
                                                    "CUDA Version: 12.6 |'") -> Path:
    """An executable named nvidia-smi in ``folder`` that runs ``script`` (by default, reports a driver
    supporting CUDA 12.6): the plugin's GPU questions on a machine without one."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake
