"""Disk full while writing. Two equivalent injections, each through the real command line:
a 1 MiB tmpfs filled up to the last few KiB (when this machine permits mounting; skipped
otherwise), and a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so writes fail with EFBIG)
in the detection subprocess, which needs no privilege. Either way: exit status 2, the error as the
last stderr line (progress lines may precede it), no traceback, no output or partial file, and
the inputs byte for byte as they were."""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import pytest

from reliability.rasters import files_in, geotransform, noise, write

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def big_pair(tmp_path: Path) -> Tuple[Path, Path]:
    """300×300 pixels of noise: its confidence raster is far larger than the space left."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    return (write(folder / "b.tif", noise((3, 300, 300), 0), geotransform()),
            write(folder / "a.tif", noise((3, 300, 300), 1), geotransform()))


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "small_disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here; test_file_size_limit covers the fault")
    try:
        filler = folder / "filler"
        with open(filler, "wb") as handle:  # leave 24 KiB: enough to create the files, not to fill them
            handle.write(b"\0" * (1024 * 1024 - 24 * 1024))
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detect_cli(pair: Tuple[Path, Path], out: Path, model: Path,
               preexec: Optional[Callable[[], None]] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deepcl_core", "detect", *map(str, pair), "--change", str(out / "change.tif"),
               "--confidence", str(out / "confidence.tif"), "--distance", str(out / "distance.tif"),
               "--model", str(model), "--tile", "128", "--overlap", "0", "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, preexec_fn=preexec)


def assert_disk_full_error(result: subprocess.CompletedProcess, command: str = "detect") -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and lines[-1].startswith("deepcl: error: "), result.stderr
    assert "disk" in lines[-1] or "space" in lines[-1] or "too large" in lines[-1], lines[-1]
    assert not [line for line in lines[:-1] if not line.startswith(f"{command}:")], result.stderr


def test_full_tmpfs(big_pair, tiny_model_path, full_tmpfs):
    before = [digest(p) for p in big_pair]
    assert_disk_full_error(detect_cli(big_pair, full_tmpfs, tiny_model_path))
    assert files_in(full_tmpfs) == ["filler"]
    assert [digest(p) for p in big_pair] == before


def limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (40 * 1024, 40 * 1024))


def test_file_size_limit(big_pair, tiny_model_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = [digest(p) for p in big_pair]
    assert_disk_full_error(detect_cli(big_pair, out, tiny_model_path, preexec=limit_file_size))
    assert files_in(out) == []
    assert [digest(p) for p in big_pair] == before


def test_evaluate_with_a_full_temporary_folder_names_it(big_pair, tiny_model_path, full_tmpfs, tmp_path):
    """evaluate writes each pair's maps to the temporary folder: "writing /tmp/…/deepcl-evaluate-…/
    pair_confidence.tif failed: No space left on device (is the disk full?)" did not say that the
    full disk was the temporary folder's, nor that TMPDIR moves it."""
    import shutil

    pair = tmp_path / "pairs" / "noise"
    pair.mkdir(parents=True)
    for role, source in zip(("before", "after"), big_pair):
        shutil.copy(source, pair / f"{role}.tif")
    write(pair / "label.tif", (noise((1, 300, 300), 2) > 2000).astype("uint8"), geotransform())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(full_tmpfs)}
    result = subprocess.run([sys.executable, "-m", "deepcl_core", "evaluate", str(pair.parent), "--model",
                             str(tiny_model_path), "--tile", "128", "--device", "cpu"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert_disk_full_error(result, "evaluate")
    last = result.stderr.strip().splitlines()[-1]
    assert f"the temporary folder {full_tmpfs}" in last and "TMPDIR" in last, last
    assert files_in(full_tmpfs) == ["filler"]
