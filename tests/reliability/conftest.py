"""Fixtures for the reliability tests: the good synthetic pair, the bad model files, a read-only
folder, and the DeepCL provider in the pytest-qgis QGIS (as in tests/qgis)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

import pytest

from reliability.models import bad_model_files
from reliability.rasters import good_image


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a shared, busy CPU threads spin against
    each other; restored afterwards, so other tests keep torch's default."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def good_pair(tmp_path: Path) -> Tuple[Path, Path]:
    """A 50×40 3-band UInt8 pair on one UTM grid; different noise, so the model sees change."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return good_image(inputs / "before.tif", 0), good_image(inputs / "after.tif", 1)


@pytest.fixture(scope="session")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Dict[str, Tuple[Path, Sequence[str]]], Path]:
    return bad_model_files(tmp_path_factory.mktemp("bad_models"))


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can create files in. Root ignores permission bits, so as root it is a
    read-only tmpfs when mounting is permitted, else /proc (which refuses new files to everyone)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    folder = tmp_path / "read_only_mount"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    yield folder if mounted else Path("/proc")
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)

