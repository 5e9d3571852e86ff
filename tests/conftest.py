"""Shared fixtures: the real data folder, a tiny untrained model file, and small crops of real
pairs written to temporary files (small enough that detection runs in about a second)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable, Iterator, Tuple

import numpy as np
import pytest
from osgeo import gdal

from core_test_helpers import TINY_CONFIG, crop
from deepcl_core.model import build_network
from deepcl_core.model_file import ModelBundle, load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

# A test run started in the background by a shell without job control (`make test &` in a script)
# inherits SIGINT ignored, and so would every command these tests start and interrupt with it: the
# tests are of Ctrl-C as a terminal delivers it. A handled signal is reset to its default in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def data_root() -> Path:
    """``$DEEPCL_DATA`` if set, else ``../shared/data`` next to the project."""
    return Path(os.environ.get("DEEPCL_DATA", DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "oscd").is_dir():
        pytest.skip(f"real data not found at {root}; set DEEPCL_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, untrained DeepCL model file (simple CNN encoder), with a fixed seed."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    bundle = ModelBundle(TINY_CONFIG, build_network(TINY_CONFIG).state_dict(), trained=False,
                         provenance={"purpose": "test fixture"})
    save_model(bundle, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: Path) -> ModelBundle:
    """The tiny model loaded once (pass it to ``detect_changes(model=...)`` to skip reloading)."""
    return load_model(tiny_model_path)



@pytest.fixture(scope="session")
def oscd_mismatch_pair(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """A 192×160 crop of OSCD abudhabi (4-band UInt16, EPSG:4326). The after crop stays on its own
    grid (other pixel size and size, and a larger extent), so detection must align it."""
    city = data_dir / "oscd" / "abudhabi"
    folder = tmp_path_factory.mktemp("abudhabi")
    before = crop(city / "before.tif", folder / "before.tif", 100, 120, 192, 160)
    after = crop(city / "after.tif", folder / "after.tif", 98, 118, 200, 170)
    return before, after


@pytest.fixture(scope="session")
def levir_pair(data_dir: Path) -> Tuple[Path, Path]:
    """A 256×256 LEVIR-CD PNG pair without georeference."""
    folder = data_dir / "levir" / "test_102_0512_0000"
    return folder / "before.png", folder / "after.png"


@pytest.fixture
def write_raster(tmp_path: Path) -> Callable[..., Path]:
    """``write_raster(name, array (bands, h, w), geotransform=None, epsg=None, nodata=None)``:
    a GeoTIFF in the test's temporary folder with the array's data type."""
    from osgeo import gdal_array, osr

    def write(name: str, array: np.ndarray, geotransform=None, epsg=None, nodata=None) -> Path:
        path = tmp_path / name
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        dtype = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
        ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0], dtype)
        if geotransform is not None:
            ds.SetGeoTransform(geotransform)
        if epsg is not None:
            srs = osr.SpatialReference()
            srs.ImportFromEPSG(epsg)
            ds.SetProjection(srs.ExportToWkt())
        for index in range(array.shape[0]):
            band = ds.GetRasterBand(index + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            band.WriteArray(array[index])
        ds = None
        return path

    return write


_PROVIDERS = []  # the registry holds a C++ pointer only; Python keeps the provider alive


@pytest.fixture
def deepcl_provider(qgis_app, qgis_processing) -> Iterator[object]:
    """The plugin's Processing provider in a real QGIS; registered again when a test (the
    plugin's unload) removed it."""
    from qgis.core import QgsApplication

    from deepcl_qgis.provider import DeepCLProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("deepcl") is None:
        _PROVIDERS.append(DeepCLProvider())
        assert registry.addProvider(_PROVIDERS[-1])
    yield registry.providerById("deepcl")


@pytest.fixture
def gdal_exceptions_on():
    """A host (another plugin, a user's script) that turned GDAL's exceptions on, as GDAL 4 does by default."""
    from osgeo import gdal

    before = gdal.GetUseExceptions()
    gdal.UseExceptions()
    yield
    if not before:
        gdal.DontUseExceptions()
