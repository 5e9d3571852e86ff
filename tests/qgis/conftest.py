"""Fixtures for the plugin tests: real data, a tiny untrained model file, and the DeepCL provider
registered in the pytest-qgis QGIS instance."""
from __future__ import annotations

from pathlib import Path

import pytest

from plugin_test_helpers import pair

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained 3-band model: fast on a CPU; tests check the plumbing, not the accuracy."""
    import torch

    from deepcl_core.model import NetworkConfig, build_network
    from deepcl_core.model_file import ModelBundle, save_model

    torch.manual_seed(0)
    config = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(ModelBundle(config, build_network(config).state_dict(), trained=False), path)
    return path



@pytest.fixture
def oscd_crop(tmp_path: Path) -> Path:
    """A 160×160 pixel crop of an OSCD pair (4-band UInt16, EPSG:4326; the after image on another
    grid) with its label: small enough for a CPU, real enough to exercise reprojection."""
    from osgeo import gdal

    source = pair("oscd", "abudhabi")
    folder = tmp_path / "abudhabi_crop"
    folder.mkdir()
    before = gdal.Open(str(source / "before.tif"))
    x0, dx, _, y0, _, dy = before.GetGeoTransform()
    window = [x0 + 200 * dx, y0 + 200 * dy, x0 + 360 * dx, y0 + 360 * dy]
    for role in ("before", "after", "label"):
        gdal.Translate(str(folder / f"{role}.tif"), str(source / f"{role}.tif"), projWin=window)
    return folder
