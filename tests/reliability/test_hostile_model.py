"""A model file (or training checkpoint) from a stranger that would run code when unpickled is
refused everywhere it can enter, and the code never runs: the payload would create a marker
folder, and a control shows that an unsafe load does create it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepcl_core.errors import InputError, ModelFileError
from deepcl_core.training.checkpoint import load_checkpoint
from reliability.models import RunsCode, hostile_pickle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hostile(tmp_path: Path):
    marker = tmp_path / "code-ran"
    return hostile_pickle(tmp_path / "hostile.pt", marker), marker


def test_control_an_unsafe_load_would_run_the_code(tmp_path):
    path, marker = hostile_pickle(tmp_path / "control.pt", tmp_path / "control-ran"), tmp_path / "control-ran"
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_dir()


def test_deepcl_info_refuses_it_in_a_real_process(hostile):
    path, marker = hostile
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "deepcl_core", "info", str(path)], capture_output=True,
                            text=True, env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "never run" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not marker.exists()


def test_fine_tuning_from_it_is_refused(hostile, tmp_path):
    from deepcl_core.training import TrainOptions, train

    path, marker = hostile
    with pytest.raises(ModelFileError, match="never run"):
        train(TrainOptions(data_dirs=[tmp_path], out=tmp_path / "m.pt", init=path, device="cpu"))
    assert not marker.exists() and not (tmp_path / "m.pt").exists()


def test_a_hostile_checkpoint_is_refused_on_resume(tmp_path):
    marker = tmp_path / "ckpt-ran"
    checkpoint = tmp_path / "m.pt.ckpt"
    torch.save({"format": "deepcl-checkpoint", "format_version": 1, "history": RunsCode(marker)}, checkpoint)
    with pytest.raises(InputError, match="cannot be read"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_processing_refuses_it_before_running(deepcl_provider, hostile, good_pair, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    path, marker = hostile
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("deepcl:detectchanges")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, message = algorithm.checkParameterValues(
        {"BEFORE": str(good_pair[0]), "AFTER": str(good_pair[1]), "MODEL": str(path),
         "CHANGE": str(tmp_path / "c.tif"), "CONFIDENCE": str(tmp_path / "p.tif")}, context)
    assert not ok and "never run" in message
    assert not marker.exists()
