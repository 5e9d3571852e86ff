"""The command line as a user meets it (``python -m deepcl_core``, in a subprocess): a good run
prints a summary; every bad input ends with exit status 2 and exactly one line on stderr, never a
traceback, and leaves no output file."""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import List, Optional, Set

import pytest
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--tile", "128", "--overlap", "32", "--device", "cpu"]


def deepcl_env(**extra: str) -> dict:
    """This environment, with the project on the module path, and ``extra``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **extra}


def deepcl(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepcl_core", *map(str, args)], capture_output=True, text=True,
                          env=deepcl_env(), cwd=cwd or ROOT, timeout=120)


def stderr_lines(result: subprocess.CompletedProcess) -> List[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = stderr_lines(result)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert line.startswith("deepcl: error: "), line
    for word in words:
        assert word.lower() in line.lower(), line
    return line


def detect_args(before, after, out: Path, model: Path, *extra) -> list:
    return ["detect", before, after, "--change", out / "change.tif", "--confidence", out / "confidence.tif",
            "--distance", out / "distance.tif", "--polygons", out / "changes.gpkg", "--model", model, *FAST, *extra]


def files_in(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_version_names_the_versions_and_devices_for_a_bug_report():
    import torch

    from deepcl_core import __version__

    result = deepcl("--version")
    assert result.returncode == 0 and result.stderr == ""
    devices = "cuda:0" if torch.cuda.is_available() else "devices: cpu"
    line = result.stdout.strip()
    assert line.startswith(f"deepcl {__version__}; PyTorch {torch.__version__} (CUDA build: ") and devices in line
    assert f"GDAL {gdal.__version__}" in line and "\n" not in line


def test_good_run_prints_a_summary(oscd_mismatch_pair, tiny_model_path, tmp_path):
    result = deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path, "--threshold", "0.3"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["changed_pixels"] == summary["valid_pixels"] == 192 * 160  # threshold under every p
    assert 90 < summary["changed_area_m2"] / summary["changed_pixels"] < 110
    assert summary["polygon_count"] >= 1
    assert any("never trained" in w for w in summary["warnings"])
    assert summary["input_scale"] == 1  # the tiny model enlarges nothing
    assert files_in(tmp_path) == ["change.tif", "changes.gpkg", "confidence.tif", "distance.tif"]


@pytest.mark.parametrize("columns", [80, 50])
def test_on_a_terminal_the_threshold_note_and_warnings_are_seen_whole(oscd_mismatch_pair, tiny_model_path, tmp_path,
                                                                      columns):
    """On a terminal the bar showed a message cut at 60 characters, and its next step overwrote it:
    the first message, which says which threshold applies, was never seen there. A warning was
    written on the bar's line, where its next step would overwrite it. The bar fits the terminal."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    # The bar fits, so that the next one is drawn over it (it wrapped, and left pieces behind)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    arguments = detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path, "--threshold", "0.3")
    run = subprocess.Popen([sys.executable, "-m", "deepcl_core", *map(str, arguments)],
                           stdout=subprocess.DEVNULL, stderr=terminal, env=deepcl_env(), cwd=ROOT)
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the run has closed the terminal
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    assert run.wait(timeout=120) == 0
    # What stays on the screen: of each line (the terminal ends them \r\n), what its last \r leaves
    lines = [line.rstrip("\r").split("\r")[-1] for line in shown.decode().split("\n")]
    [first] = [line for line in lines if line.startswith("detect: before ")]
    assert first.endswith("; threshold 0.3 (given; the model's here: 0.5) on the network's score"), lines
    assert "deepcl: the model was never trained: its output is meaningless" in lines
    bars = [frame for line in shown.decode().split("\n") for frame in line.split("\r") if frame.startswith("detect [")]
    assert bars and max(len(bar) for bar in bars) < columns
    assert lines[-2].startswith("detect [##############################] 100.0%"), lines


def test_inputs_inside_a_zip_file(oscd_mismatch_pair, tiny_model_path, tmp_path):
    """/vsizip//… reaches GDAL with its double slash (argparse's type=Path folded it, so the zip
    itself was opened)."""
    with zipfile.ZipFile(tmp_path / "pair.zip", "w") as archive:
        for date, path in zip(("before", "after"), oscd_mismatch_pair):
            archive.write(path, f"{date}.tif")
    out = tmp_path / "out"
    out.mkdir()
    zipped = [f"/vsizip/{tmp_path / 'pair.zip'}/{date}.tif" for date in ("before", "after")]
    result = deepcl(*detect_args(*zipped, out, tiny_model_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid_pixels"] == 192 * 160


def test_input_scale_is_given_to_the_network_and_checked(oscd_mismatch_pair, tiny_model_path, tmp_path):
    (tmp_path / "two").mkdir()
    result = deepcl(*detect_args(*oscd_mismatch_pair, tmp_path / "two", tiny_model_path, "--input-scale", "2"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["input_scale"] == 2
    (tmp_path / "five").mkdir()
    result = deepcl(*detect_args(*oscd_mismatch_pair, tmp_path / "five", tiny_model_path, "--input-scale", "5"))
    assert result.returncode == 2 and "input scale must be a whole number from 1 to 4" in result.stderr
    assert files_in(tmp_path / "five") == []


@pytest.fixture(scope="module")
def bad_inputs(oscd_mismatch_pair, tmp_path_factory):
    """Inputs that are wrong in one way each, next to the good abudhabi crop."""
    before, _ = oscd_mismatch_pair
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.tif"
    text.write_text("not a raster\n")
    empty = folder / "empty.tif"
    empty.touch()
    (folder / "a_folder.tif").mkdir()
    # The same image moved 1° east: another geotransform, no overlap.
    shifted = folder / "shifted.tif"
    gdal.Translate(str(shifted), str(before))
    ds = gdal.Open(str(shifted), gdal.GA_Update)
    x0, dx, rx, y0, ry, dy = ds.GetGeoTransform()
    ds.SetGeoTransform((x0 + 1.0, dx, rx, y0, ry, dy))
    ds = None
    one_band = folder / "one_band.tif"
    gdal.Translate(str(one_band), str(before), bandList=[1])
    all_nodata = folder / "all_nodata.tif"
    gdal.Translate(str(all_nodata), str(before), noData=0)
    ds = gdal.Open(str(all_nodata), gdal.GA_Update)
    for index in range(1, ds.RasterCount + 1):
        ds.GetRasterBand(index).Fill(0)
    ds = None
    corrupt_model = folder / "corrupt.pt"
    corrupt_model.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    return {"text": text, "empty": empty, "folder": folder / "a_folder.tif", "shifted": shifted,
            "one_band": one_band, "all_nodata": all_nodata, "corrupt_model": corrupt_model,
            "missing": folder / "missing.tif"}


@pytest.mark.parametrize("which, role, words", [
    ("missing", "before", ["not found"]),
    ("folder", "before", ["folder"]),
    ("text", "after", ["not a raster"]),
    ("empty", "after", ["empty"]),
    ("shifted", "after", ["do not overlap"]),
    ("one_band", "after", ["bands"]),
    pytest.param("all_nodata", "after", ["no valid pixel"]),
])
def test_bad_image(oscd_mismatch_pair, tiny_model_path, bad_inputs, tmp_path, which, role, words):
    before, after = oscd_mismatch_pair
    if role == "before":
        before = bad_inputs[which]
    else:
        after = bad_inputs[which]
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(deepcl(*detect_args(before, after, out, tiny_model_path)), *words)
    assert files_in(out) == []


def test_band_index_out_of_range(oscd_mismatch_pair, tiny_model_path, tmp_path):
    result = deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path, "--bands-after", "1,2,9"))
    assert_one_line_error(result, "band 9")
    assert files_in(tmp_path) == []


def test_malformed_band_list(oscd_mismatch_pair, tiny_model_path, tmp_path):
    result = deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path, "--bands-before", "red"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1,2,3" in result.stderr
    assert files_in(tmp_path) == []


def test_corrupt_model_file(oscd_mismatch_pair, bad_inputs, tmp_path):
    assert_one_line_error(deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, bad_inputs["corrupt_model"])),
                          "model file")
    assert files_in(tmp_path) == []


def test_missing_output_folder(oscd_mismatch_pair, tiny_model_path, tmp_path):
    assert_one_line_error(deepcl(*detect_args(*oscd_mismatch_pair, tmp_path / "nowhere", tiny_model_path)),
                          "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_unwritable_output_folder(oscd_mismatch_pair, tiny_model_path, tmp_path):
    if os.geteuid() == 0:
        # root writes through file modes; /proc refuses new files to everyone.
        out = Path("/proc")
        result = deepcl(*detect_args(*oscd_mismatch_pair, out, tiny_model_path))
        assert_one_line_error(result, "/proc", "not writable")
        assert not any(Path("/proc", name).exists() for name in ("change.tif", "confidence.tif", "changes.gpkg"))
        return
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert_one_line_error(deepcl(*detect_args(*oscd_mismatch_pair, out, tiny_model_path)), "not writable")
        assert files_in(out) == []
    finally:
        out.chmod(0o700)


def test_existing_output_needs_overwrite(oscd_mismatch_pair, tiny_model_path, tmp_path):
    (tmp_path / "change.tif").write_bytes(b"keep me")
    assert_one_line_error(deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path)), "--overwrite")
    assert files_in(tmp_path) == ["change.tif"] and (tmp_path / "change.tif").read_bytes() == b"keep me"


def test_info_prints_the_contract(tiny_model_path):
    result = deepcl("info", tiny_model_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "deepcl-model" and info["architecture"] == "deepcl"
    assert info["config"]["encoder"] == "simple_cnn"
    assert info["bands"] == ["red", "green", "blue"]
    assert 0 < info["threshold"] < 1 and info["parameters"] > 1000
    assert info["normalization"]["method"] == "percentile_stretch"
    assert info["trained"] is False and "state_dict" not in info


@pytest.mark.parametrize("which", ["corrupt_model", "text"])
def test_info_on_a_bad_model_file(bad_inputs, which):
    assert_one_line_error(deepcl("info", bad_inputs[which]), "model file")


def test_a_closed_output_pipe_is_no_internal_error(tiny_model_path):
    """`deepcl info MODEL | head -1`: the reader leaves early; the command ends quietly with 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "deepcl_core", "info", str(tiny_model_path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "error" not in done.stderr.lower()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_results_that_cannot_be_written_to_stdout_are_an_error_not_a_bug(tiny_model_path):
    """`deepcl evaluate … > results.json` on a full disk: the JSON, the run's only output, was lost
    with "internal error … report it"; it is a fault of the run's surroundings, said as one."""
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        done = subprocess.run([sys.executable, "-m", "deepcl_core", "info", str(tiny_model_path)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=deepcl_env(), cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "deepcl: error: the results could not be written to standard output: No space left on device"]


def test_sigterm_ends_a_run_as_ctrl_c_does(tiny_model_path, tmp_path):
    """kill, a job scheduler or a stopping container sends SIGTERM: the hidden partial outputs are
    removed, one line says so, and the exit status is the shell's for it (143)."""
    city = Path(os.environ.get("DEEPCL_DATA", ROOT.parent / "shared" / "data")) / "oscd" / "bercy"
    env = deepcl_env()
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "deepcl_core", *map(str, detect_args(
        city / "before.tif", city / "after.tif", out, tiny_model_path, "--tile", "64", "--overlap", "16"))],
        stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not any(".partial" in name for name in files_in(out)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before its outputs were begun"
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "deepcl: terminated; no output was written"
    assert files_in(out) == []


def test_summary_paths_keep_their_letters_and_debug_goes_anywhere(oscd_mismatch_pair, tiny_model_path, tmp_path):
    out = tmp_path / "Zürich"
    out.mkdir()
    result = deepcl(*detect_args(*oscd_mismatch_pair, out, tiny_model_path))
    assert result.returncode == 0, result.stderr
    assert str(out / "change.tif") in result.stdout and json.loads(result.stdout)["changed_pixels"] >= 0
    # --debug after the command, where it is natural to add it to a failing command line
    result = deepcl("info", tmp_path / "missing.pt", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ModelFileError" in result.stderr


def test_json_reaches_a_stdout_that_cannot_encode_its_letters(oscd_mismatch_pair, tiny_model_path, tmp_path):
    """A redirected stdout on Windows is cp1252, without ▸: the run ended with an internal error and no
    JSON after its work was done. Escaped, the JSON holds the same path."""
    out = tmp_path / "Zürich ▸ 2"
    out.mkdir()
    env = deepcl_env(PYTHONIOENCODING="cp1252")
    result = subprocess.run([sys.executable, "-m", "deepcl_core", *map(str, detect_args(*oscd_mismatch_pair, out,
                                                                                         tiny_model_path))],
                            capture_output=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr.decode("cp1252")
    assert result.stdout.isascii() and json.loads(result.stdout)["change"] == str(out / "change.tif")


def test_minimum_area_must_be_a_number(oscd_mismatch_pair, tiny_model_path, tmp_path):
    assert_one_line_error(deepcl(*detect_args(*oscd_mismatch_pair, tmp_path, tiny_model_path, "--min-area", "nan")),
                          "minimum area must be a number")


def test_a_run_told_to_ignore_sigterm_keeps_ignoring_it(oscd_mismatch_pair, tiny_model_path, tmp_path):
    """Started under nohup (SIGTERM ignored), a run is not ended by SIGTERM."""
    env = deepcl_env()
    run = subprocess.Popen([sys.executable, "-m", "deepcl_core", *map(str, detect_args(
        *oscd_mismatch_pair, tmp_path, tiny_model_path, "--tile", "64", "--overlap", "16"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not any(".partial" in name for name in files_in(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert files_in(tmp_path) == ["change.tif", "changes.gpkg", "confidence.tif", "distance.tif"]


STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


def pump_lines(stream) -> "queue.Queue[Optional[str]]":
    """The lines of ``stream`` as they come, then None, read in a thread: a test waits for one with a timeout."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    return lines


def lines_until(lines: "queue.Queue[Optional[str]]", marker: str, timeout: float) -> List[str]:
    """The lines from ``lines`` (:func:`pump_lines`) up to the first that holds ``marker``."""
    seen: List[str] = []
    deadline = time.monotonic() + timeout
    while not seen or marker not in seen[-1]:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        assert line is not None, f"the run ended before {marker!r}: {''.join(seen)}"
        seen.append(line)
    return seen


@pytest.fixture(scope="module")
def pair_on_a_wide_canvas(data_dir, tmp_path_factory):
    """OSCD bercy (360×395) on a canvas of 8,192² pixels of nodata (VRTs): the tiles without a valid
    pixel are skipped, so that the run soon builds the overviews of 8,192² maps, which takes
    seconds. The image lies at (400, 400), where the statistics' sample windows find it."""
    folder = tmp_path_factory.mktemp("wide")
    pair = []
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the window goes beyond the image, on purpose
    try:
        for date in ("before", "after"):
            pair.append(folder / f"{date}.vrt")
            assert gdal.Translate(str(pair[-1]), str(data_dir / "oscd" / "bercy" / f"{date}.tif"), format="VRT",
                                  srcWin=[-400, -400, 8192, 8192], noData=0) is not None
    finally:
        gdal.PopErrorHandler()
    return pair


def proc_entry(run: subprocess.Popen, name: str) -> Path:
    """/proc/PID/``name`` of ``run``; the test is skipped where there is no /proc (not Linux)."""
    entry = Path(f"/proc/{run.pid}/{name}")
    if not entry.exists():
        pytest.skip(f"needs /proc/PID/{name}")
    return entry


def open_files(fds: Path) -> Set[str]:
    """The files that the descriptors in ``fds`` (a /proc/PID/fd) lead to."""
    targets = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.add(os.readlink(fd))
    return targets


def wait_until_a_partial_output_is_held_open(run: subprocess.Popen, seconds: float = 0.05,
                                             timeout: float = 120) -> None:
    """Until ``run`` has kept one of its partial outputs open for ``seconds``."""
    fds = proc_entry(run, "fd")
    deadline, opened = time.monotonic() + timeout, {}
    while True:
        assert run.poll() is None, "the run ended first"
        assert time.monotonic() < deadline, "no partial output was held open"
        now = time.monotonic()
        opened = {path: opened.get(path, now) for path in open_files(fds) if ".partial" in path}
        if any(now - since >= seconds for since in opened.values()):
            return
        time.sleep(0.005)


@pytest.mark.parametrize("signum, status, word", STOPS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_overviews_are_built_ends_the_run_as_in_the_tiles(
        pair_on_a_wide_canvas, tiny_model_path, tmp_path, signum, status, word):
    """Ctrl-C or SIGTERM while GDAL builds the overviews: it came inside GDAL's progress callback,
    whose traceback was printed, and the run ended with "building the overviews … failed: User
    terminated (is the disk full?)" and status 2, instead of as an interrupt."""
    run = subprocess.Popen([sys.executable, "-m", "deepcl_core", *map(str, detect_args(
        *pair_on_a_wide_canvas, tmp_path, tiny_model_path, "--overviews", "--tile", "1024"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=deepcl_env(), cwd=ROOT)
    lines = pump_lines(run.stderr)
    seen = lines_until(lines, "building overviews", timeout=180)
    wait_until_a_partial_output_is_held_open(run)  # by GDAL building its overviews, not just opening it
    run.send_signal(signum)
    stderr = "".join(seen + list(iter(lambda: lines.get(timeout=120), None)))
    assert run.wait(timeout=60) == status, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == f"deepcl: {word}; no output was written"
    assert files_in(tmp_path) == []


# What the console script `deepcl` runs (pyproject's [project.scripts]), without it having to be installed
CONSOLE_SCRIPT = "import sys; from deepcl_core.cli import main; sys.exit(main())"


def wait_for_torch_to_load(run: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``run`` has mapped torch's library, that is, is importing torch (Linux)."""
    maps = proc_entry(run, "maps")
    deadline = time.monotonic() + timeout
    while "libtorch" not in maps.read_text():
        assert run.poll() is None, f"the run ended before it imported torch: {run.communicate()[1]}"
        assert time.monotonic() < deadline, "torch was not imported"
        time.sleep(0.005)


@pytest.mark.parametrize("entry", [["-m", "deepcl_core"], ["-c", CONSOLE_SCRIPT]], ids=["python -m", "deepcl"])
def test_a_signal_while_torch_is_imported_ends_the_run_as_any_interrupt(entry, oscd_mismatch_pair, tiny_model_path,
                                                                         tmp_path):
    """Ctrl-C or SIGTERM in the second or so that importing torch takes: a KeyboardInterrupt
    traceback, at times an abort inside pybind11 or a signal lost (the run went on to exit 0),
    and SIGTERM killed the process before its handler was set. Sent at a few moments of the import,
    each run must end as an interrupt does: the one line, 130 or 143, and no output."""
    for signum, status, word in STOPS:
        for delay in (0.0, 0.3):  # early and later in the import
            out = tmp_path / f"{signum.name}-{delay}"
            out.mkdir()
            run = subprocess.Popen([sys.executable, *entry, *map(str, detect_args(*oscd_mismatch_pair, out,
                                                                                   tiny_model_path))],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=deepcl_env(),
                                   cwd=ROOT)
            wait_for_torch_to_load(run)
            time.sleep(delay)
            run.send_signal(signum)
            _, stderr = run.communicate(timeout=120)
            assert run.returncode == status, f"{signum.name} after {delay} s: {run.returncode}; {stderr}"
            assert "Traceback" not in stderr, stderr
            assert stderr.strip().splitlines()[-1] == f"deepcl: {word}; no output was written"
            assert files_in(out) == []


def test_a_copy_of_the_engine_without_the_bundled_model_says_to_give_one(levir_pair, tmp_path):
    """The engine installed as a package (pip install .) has no resources/ folder: detection said
    "no trained model is bundled with this copy of DeepCL yet", as if none existed."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(ROOT / "deepcl_core", site / "deepcl_core", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "deepcl_core", "detect", *levir_pair, "--change", tmp_path / "c.tif",
                           "--confidence", tmp_path / "f.tif", *FAST], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path, timeout=120)
    line = assert_one_line_error(done, f"has no bundled model at {site / 'resources' / 'models'}",
                                 "pass a model file with --model")
    assert "yet" not in line and files_in(tmp_path) == ["site"]
