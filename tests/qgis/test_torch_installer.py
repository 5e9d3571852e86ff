"""The installer for real: pip in a QProcess, from a local wheel folder (no internet), into a
temporary folder that then serves imports; the CPU/CUDA choice; the install dialog."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from plugin_test_helpers import fake_nvidia_smi, process_events_for, wait_for

PROBE = "deepcl_probe_pkg"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def wheel_folder(tmp_path: Path) -> Path:
    """A folder holding one tiny pure-Python wheel, as a local package index."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    info = f"{PROBE}-1.2.dist-info"
    files = {f"{PROBE}/__init__.py": "VERSION = '1.2'\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.2\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{PROBE}-1.2-py3-none-any.whl", "w") as wheel:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            wheel.writestr(name, text)
    return folder


def _plan(target: Path, wheels: Path, requirement: str = PROBE):
    from deepcl_qgis.torch_installer import InstallPlan

    return InstallPlan(target, [requirement], ["--no-index", "--find-links", str(wheels)], "local", sys.executable)


def _install(plan) -> tuple:
    from deepcl_qgis.torch_installer import PipInstaller

    installer, lines, result = PipInstaller(), [], []
    installer.output.connect(lines.append)
    installer.finished.connect(lambda ok, message: result.append((ok, message)))
    installer.start(plan)
    wait_for(lambda: bool(result))
    return result[0], lines


def test_pip_installs_into_the_owned_folder_and_the_plugin_imports_from_it(qgis_app, wheel_folder, tmp_path):
    from deepcl_qgis.torch_installer import installed_version

    target = tmp_path / "deepcl_deps"
    (ok, message), lines = _install(_plan(target, wheel_folder))
    assert ok, message
    assert lines[0].startswith("$ ") and "--target" in lines[0]
    assert any(f"Successfully installed {PROBE.replace('_', '-')}-1.2" in line or
               f"Successfully installed {PROBE}-1.2" in line for line in lines)  # pip's output, live
    assert (target / PROBE / "__init__.py").is_file() and installed_version(PROBE, target) == "1.2"
    try:
        module = importlib.import_module(PROBE)  # the installer put the folder on sys.path
        assert Path(module.__file__).parent.parent == target and module.VERSION == "1.2"
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(PROBE, None)


def test_plugin_start_puts_the_owned_folder_on_the_path(wheel_folder, tmp_path):
    """A fresh QGIS Python with ``DEEPCL_DEPS_DIR`` set: the plugin's start-up adds the folder
    (after QGIS's own packages) and the package imports from there."""
    target = tmp_path / "deps"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheel_folder),
                    "--target", str(target), PROBE], check=True, timeout=120)
    script = ("import sys\n"
              "from qgis.core import QgsApplication\n"
              "app = QgsApplication([], False); app.initQgis()\n"
              "from deepcl_qgis.plugin import DeepCLPlugin\n"
              "DeepCLPlugin(None).initProcessing()\n"
              f"import {PROBE}; print({PROBE}.__file__)\n"
              "print(sys.path.index(sys.argv[1]) > sys.path.index(next(p for p in sys.path if 'packages' in p)))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEEPCL_DEPS_DIR": str(target), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    path, appended = done.stdout.split()[-2:]
    assert path == str(target / PROBE / "__init__.py") and appended == "True"


def test_a_failed_install_says_why(qgis_app, wheel_folder, tmp_path):
    (ok, message), _lines = _install(_plan(tmp_path / "deps", wheel_folder, "no_such_package_xyz"))
    assert not ok
    assert message.startswith("The installation failed:") and "no matching package" in message


def ask_driver(program: Path, timeout_s: float = 20.0):
    """DriverQuery's answers for ``program`` once the events of a further half second are processed
    too (a second answer would come among them), the seconds the first took, and the query."""
    from deepcl_qgis.nvidia_driver import DriverQuery

    query, answers = DriverQuery(program=str(program), timeout_s=timeout_s), []
    query.answered.connect(answers.append)
    started = time.monotonic()
    query.start()
    assert answers == [] and time.monotonic() - started < 0.5  # the answer comes through the event loop
    wait_for(lambda: bool(answers), timeout=30)
    seconds = time.monotonic() - started
    process_events_for(0.5)
    return answers, seconds, query


def test_the_driver_s_cuda_version_comes_from_nvidia_smi_without_waiting_for_it(qgis_app, tmp_path):
    """nvidia-smi's CUDA version, answered once; None where it is missing, fails or hangs (after
    the time limit, the program killed), and the GUI thread is never held up meanwhile."""
    assert ask_driver(fake_nvidia_smi(tmp_path / "ok"))[0] == [(12, 6)]
    assert ask_driver(tmp_path / "missing")[0] == [None]
    assert ask_driver(fake_nvidia_smi(tmp_path / "failing", "echo 'NVIDIA-SMI has failed'; exit 9"))[0] == [None]
    answers, seconds, query = ask_driver(fake_nvidia_smi(tmp_path / "hanging", "exec sleep 30"), timeout_s=0.5)
    assert answers == [None] and seconds < 10
    wait_for(lambda: query.asking.process.poll() is not None, timeout=5)  # killed, not left to run


def test_a_query_stopped_before_nvidia_smi_answers_says_nothing(qgis_app, tmp_path):
    """A dialog closed while nvidia-smi works: no answer reaches it later."""
    from deepcl_qgis.nvidia_driver import DriverQuery

    query, answers = DriverQuery(program=str(fake_nvidia_smi(tmp_path, "sleep 0.3; exec echo 'CUDA Version: 12.6'"))), []
    query.answered.connect(answers.append)
    query.start()
    query.stop()
    wait_for(lambda: query.asking.done.is_set(), timeout=10)
    process_events_for(0.3)
    assert answers == [] and query.asking.answer == (12, 6)


def test_cpu_or_cuda_build_follows_the_driver(tmp_path):
    from deepcl_qgis.torch_installer import torch_index, torch_plan

    assert torch_index((12, 6))[1] == ["--index-url", "https://download.pytorch.org/whl/cu126"]
    assert torch_index((13, 0))[1][-1].endswith("/cu128") and torch_index((11, 8))[1][-1].endswith("/cu118")
    assert torch_index((11, 4))[1][-1].endswith("/cpu") and torch_index(None)[0] == "CPU"
    plan = torch_plan((12, 8), tmp_path / "deps")
    assert plan.requirements == ["torch"] and plan.target == tmp_path / "deps" and "cu128" in plan.command_line()
    assert "--target" in plan.arguments() and plan.python


def test_install_dialog_offers_the_build_the_driver_supports_once_it_answers(qgis_app, tmp_path, monkeypatch):
    from deepcl_qgis.dock.install_dialog import InstallDialog

    fake = fake_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DEEPCL_DEPS_DIR", str(tmp_path / "deps"))
    dialog = InstallDialog()
    assert dialog.plan is None and not dialog.install_button.isEnabled()  # nothing to install yet
    wait_for(lambda: dialog.plan is not None, timeout=30)
    assert "(CUDA 12.6 (NVIDIA driver supports CUDA 12.6) build)" in dialog.intro.text()
    assert str(tmp_path / "deps") in dialog.intro.text()
    assert dialog.install_button.isEnabled() and "cu126" in dialog.plan.command_line()


def test_install_dialog_shows_pip_output_live_and_the_result(qgis_app, wheel_folder, tmp_path):
    from deepcl_qgis.dock.install_dialog import InstallDialog

    target = tmp_path / "deps"
    dialog = InstallDialog(plan=_plan(target, wheel_folder))
    assert str(target) in dialog.findChildren(type(dialog.result_label))[0].text()
    dialog.install_button.click()
    assert not dialog.install_button.isEnabled() and dialog.close_button.text() == "Stop"
    wait_for(lambda: dialog.succeeded is not None)
    try:
        assert dialog.succeeded and "Successfully installed" in dialog.output.toPlainText()
        assert dialog.result_label.text().startswith(f"Installed {PROBE} into {target}.")
        assert dialog.close_button.text() == "Close"
    finally:
        sys.path.remove(str(target))


def test_owned_folder_is_in_the_qgis_profile(qgis_app, monkeypatch):
    from qgis.core import QgsApplication

    from deepcl_qgis.dependencies import owned_packages_folder

    monkeypatch.delenv("DEEPCL_DEPS_DIR", raising=False)
    folder = owned_packages_folder()
    assert folder.parent == Path(QgsApplication.qgisSettingsDirPath()) / "python" / "deepcl_deps"
    assert folder.name == f"py{sys.version_info.major}.{sys.version_info.minor}"


def test_the_python_for_pip_is_the_one_qgis_runs_not_the_first_on_path(tmp_path, monkeypatch):
    """In QGIS sys.executable may be the first python3 on PATH, e.g. a pyenv shim to another Python,
    whose wheels (cp312 …) QGIS's Python cannot import; pip ran there."""
    from deepcl_qgis.dependencies import python_executable

    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho another Python\n")
    shim.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(shim))
    python = python_executable()
    answer = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2], sys.prefix)"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    assert answer == f"{tuple(sys.version_info[:2])} {sys.prefix}"


def test_the_install_hint_installs_where_the_plugin_looks_and_not_with_user(qgis_app, wheel_folder, tmp_path,
                                                                             monkeypatch):
    """Debian 12's Python refuses `pip install --user` ("externally-managed-environment"): the hint
    installs into the plugin's own folder, as its installer does. Run here with a local wheel for torch."""
    import shlex

    from deepcl_qgis.dependencies import add_owned_packages_to_path, install_hint

    monkeypatch.setenv("DEEPCL_DEPS_DIR", str(tmp_path / "deps with space"))
    command = next(line.strip() for line in install_hint(("torch",)).splitlines() if " -m pip install " in line)
    assert "--user" not in command
    words = shlex.split(command)
    words[words.index("torch")] = PROBE
    words[words.index("--index-url"):words.index("--index-url") + 2] = ["--no-index", "--find-links", str(wheel_folder)]
    subprocess.run(words, check=True, capture_output=True, timeout=120)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert add_owned_packages_to_path()
    assert importlib.import_module(PROBE).VERSION == "1.2"


WHEELS = Path("/opt/wheels")
SYSTEM_PYTHON = "/usr/bin/python3"
# Pure-Python packages torch imports that Debian's Python lacks; pip would fetch them from the
# index with torch. Offline, they are linked from this test environment instead.
TORCH_DEPENDENCIES = ["typing_extensions.py", "networkx", "filelock", "fsspec"]


@pytest.mark.slow
def test_real_torch_wheel_installs_and_the_plugin_imports_torch_from_there(qgis_app, tmp_path):
    """The real CPU torch wheel from a local wheel folder into a temporary owned folder; then
    QGIS's system Python, which has no torch of its own, gets it through the plugin's start-up."""
    import shutil

    import torch

    if not list(WHEELS.glob("torch-*.whl")) or not Path(SYSTEM_PYTHON).is_file():
        pytest.skip("no local torch wheel or no system Python")
    if subprocess.run([SYSTEM_PYTHON, "-s", "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the system Python already has torch: nothing to show")
    target = tmp_path / "deps"
    plan = _plan(target, WHEELS, "torch")
    plan.index_options.append("--no-deps")
    try:
        (ok, message), _lines = _install(plan)
        assert ok, message
        sys.path.remove(str(target))  # this process keeps its own torch
        site_packages = Path(torch.__file__).parents[1]
        for name in TORCH_DEPENDENCIES:
            (target / name).symlink_to(site_packages / name)
        script = ("from qgis.core import QgsApplication\n"
                  "app = QgsApplication([], False); app.initQgis()\n"
                  "from deepcl_qgis.plugin import DeepCLPlugin\n"
                  "from deepcl_qgis.dependencies import missing_dependencies\n"
                  "DeepCLPlugin(None).initProcessing()\n"
                  "import torch\n"
                  "print(torch.__file__, missing_dependencies(), int(torch.ones(3).sum()))\n")
        env = {**os.environ, "PYTHONPATH": str(REPO), "DEEPCL_DEPS_DIR": str(target), "QT_QPA_PLATFORM": "offscreen"}
        done = subprocess.run([SYSTEM_PYTHON, "-s", "-c", script], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-3:] == [str(target / "torch" / "__init__.py"), "()", "3"]
    finally:
        shutil.rmtree(target, ignore_errors=True)  # 700 MB
