"""The installer for real: pip in a QProcess, from a local wheel folder (no internet), into a
temporary folder that then serves imports; the CPU/CUDA choice; the install dialog."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from plugin_test_helpers import check_message, fake_nvidia_smi, process_events_for, wait_for

PROBE = "deepcl_probe_pkg"
REPO = Path(__file__).resolve().parents[2]
WHEELS = Path("/opt/wheels")
SYSTEM_PYTHON = "/usr/bin/python3"


def write_wheel(folder: Path, name: str, version: str, files: dict) -> Path:
    """A pure-Python wheel of ``files`` (path in the wheel → text) in ``folder``, as a local package index."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            wheel.writestr(path, text)
    return folder


@pytest.fixture
def wheel_folder(tmp_path: Path) -> Path:
    """A folder holding one tiny pure-Python wheel, as a local package index."""
    return write_wheel(tmp_path / "wheels", PROBE, "1.2", {f"{PROBE}/__init__.py": "VERSION = '1.2'\n"})


@pytest.fixture
def import_paths(monkeypatch):
    """``sys.path`` and ``sys.meta_path`` as they were, after the test: an install adds to both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))


def run_after_plugin_start(script: str, deps: Path, python: str = sys.executable, first_on_path: tuple = (),
                           args: tuple = ()) -> subprocess.CompletedProcess:
    """``script`` run in a fresh QGIS Python once the plugin has started (``initProcessing``), with
    ``deps`` as the plugin's package folder and ``first_on_path`` as QGIS's own packages."""
    start = ("from qgis.core import QgsApplication\n"
             "app = QgsApplication([], True); app.initQgis()\n"
             "from deepcl_qgis.plugin import DeepCLPlugin\n"
             "DeepCLPlugin(None).initProcessing()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*first_on_path, REPO])), "DEEPCL_DEPS_DIR": str(deps),
           "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([python, "-s", "-c", start + script, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


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


def test_pip_installs_into_the_owned_folder_and_the_plugin_imports_from_it(qgis_app, wheel_folder, tmp_path,
                                                                           import_paths):
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
        sys.modules.pop(PROBE, None)


def test_plugin_start_puts_the_owned_folder_on_the_path(wheel_folder, tmp_path):
    """A fresh QGIS Python with ``DEEPCL_DEPS_DIR`` set: the plugin's start-up adds the folder
    (after QGIS's own packages) and the package imports from there."""
    target = tmp_path / "deps"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheel_folder),
                    "--target", str(target), PROBE], check=True, timeout=120)
    script = ("import sys\n"
              f"import {PROBE}; print({PROBE}.__file__)\n"
              "print(sys.path.index(sys.argv[1]) > sys.path.index(next(p for p in sys.path if 'packages' in p)))\n")
    done = run_after_plugin_start(script, target, args=(target,))
    assert done.returncode == 0, done.stderr
    path, appended = done.stdout.split()[-2:]
    assert path == str(target / PROBE / "__init__.py") and appended == "True"


def test_a_failed_install_says_why(qgis_app, wheel_folder, tmp_path):
    (ok, message), _lines = _install(_plan(tmp_path / "deps", wheel_folder, "no_such_package_xyz"))
    assert not ok
    assert message.startswith("The installation failed:") and "no matching package" in message


def test_a_python_that_does_not_start_is_named_as_the_fault(qgis_app, wheel_folder, tmp_path):
    """It advised installing pip, which was not what failed."""
    from dataclasses import replace

    plan = replace(_plan(tmp_path / "deps", wheel_folder), python=str(tmp_path / "gone" / "python3"))
    (ok, message), _lines = _install(plan)
    assert not ok and message.startswith(f"Could not start Python ({tmp_path / 'gone' / 'python3'}) to run pip: ")
    assert message.endswith("Check that this Python of QGIS exists.") and "Install pip" not in message


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

    query = DriverQuery(program=str(fake_nvidia_smi(tmp_path, "sleep 0.3; exec echo 'CUDA Version: 12.6'")))
    answers = []
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


def test_install_dialog_shows_pip_output_live_and_the_result(qgis_app, wheel_folder, tmp_path, import_paths):
    from deepcl_qgis.dock.install_dialog import InstallDialog

    target = tmp_path / "deps"
    dialog = InstallDialog(plan=_plan(target, wheel_folder))
    assert str(target) in dialog.findChildren(type(dialog.result_label))[0].text()
    dialog.install_button.click()
    assert not dialog.install_button.isEnabled() and dialog.close_button.text() == "Stop"
    wait_for(lambda: dialog.succeeded is not None)
    assert dialog.succeeded and "Successfully installed" in dialog.output.toPlainText()
    assert dialog.result_label.text().startswith(f"Installed {PROBE} into {target}.")
    assert dialog.close_button.text() == "Close"


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

    from deepcl_qgis.dependencies import NOT_INSTALLED, UnusablePackage, add_owned_packages_to_path, install_hint

    monkeypatch.setenv("DEEPCL_DEPS_DIR", str(tmp_path / "deps with space"))
    hint = install_hint((UnusablePackage("torch", NOT_INSTALLED),))
    command = next(line.strip() for line in hint.splitlines() if " -m pip install " in line)
    assert "--user" not in command
    words = shlex.split(command)
    words[words.index("torch")] = PROBE
    words[words.index("--index-url"):words.index("--index-url") + 2] = ["--no-index", "--find-links", str(wheel_folder)]
    subprocess.run(words, check=True, capture_output=True, timeout=120)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    assert add_owned_packages_to_path()
    assert importlib.import_module(PROBE).VERSION == "1.2"


WINERROR_126 = ("[WinError 126] The specified module could not be found. Error loading c10.dll or one of its "
                "dependencies.")
# A stand-in for torch with what the plugin asks of it, loading a submodule first as torch does.
FAKE_TORCH = {"torch/__init__.py": ("from torch import _loaded_first\n__version__ = '2.13.0'\n"
                                    "class version:\n    cuda = None\n"
                                    "class cuda:\n    is_available = staticmethod(lambda: False)\n"
                                    "class backends:\n    mps = None\n"),
              "torch/_loaded_first.py": ""}
# After the plugin's start: the dependency problem and the diagnostics; given a wheel folder and a
# Python for pip, an install of torch with the install dialog and the problem after it; then
# where `import torch` (and its first submodule) comes from, or its error.
REPORT_AND_INSTALL = """
import json, sys, time
from qgis.PyQt.QtCore import QCoreApplication
from deepcl_qgis.dependencies import dependency_problem, owned_packages_folder
from deepcl_qgis.dock.diagnostics import diagnostics, diagnostics_text
report = {"problem": dependency_problem(), "diagnostics": diagnostics_text(diagnostics())}
if len(sys.argv) > 1:
    from deepcl_qgis.dock.install_dialog import InstallDialog
    from deepcl_qgis.torch_installer import InstallPlan
    plan = InstallPlan(owned_packages_folder(), ["torch"], ["--no-index", "--find-links", sys.argv[1]], "local",
                       sys.argv[2])
    dialog = InstallDialog(plan=plan)
    report["intro"] = dialog.intro.text()
    dialog.install()
    while dialog.succeeded is None:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    report.update(result=dialog.result_label.text(), problem_after=dependency_problem())
try:
    import torch
    report["torch"] = [torch.__file__, torch._loaded_first.__file__]
except Exception as error:
    report["torch"] = repr(error)
print(json.dumps(report))
"""


def _report(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_broken_torch_of_qgis_is_named_with_its_error_and_the_plugin_s_copy_replaces_it(tmp_path):
    """A torch in QGIS's own Python that fails to import (Windows' "WinError 126 … c10.dll", here
    a package that raises it after loading a submodule): the message, the install dialog and the
    diagnostics give the error and where that torch lies; the copy the installer puts into the
    plugin's folder wins over it, at once and after a restart."""
    broken = tmp_path / "qgis_site" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(f"from torch import _loaded_first\nraise OSError({WINERROR_126!r})\n")
    (broken / "_loaded_first.py").write_text("")
    wheels = write_wheel(tmp_path / "wheels", "torch", "2.13.0", FAKE_TORCH)
    deps = tmp_path / "deps"
    owned = [str(deps / "torch" / "__init__.py"), str(deps / "torch" / "_loaded_first.py")]

    session = _report(run_after_plugin_start(REPORT_AND_INSTALL, deps, first_on_path=(broken.parent,),
                                             args=(wheels, sys.executable)))
    failure = f"torch fails to import (OSError: {WINERROR_126}) (at {broken})"
    assert failure in session["problem"].splitlines()[0]  # the provider's warning shows the first line
    assert f"PyTorch                : {failure}" in session["diagnostics"] and failure in session["intro"]
    assert session["result"].endswith("DeepCL is ready to use.") and session["problem_after"] == ""
    assert session["torch"] == owned

    restarted = _report(run_after_plugin_start(REPORT_AND_INSTALL, deps, first_on_path=(broken.parent,)))
    assert restarted["problem"] == "" and restarted["torch"] == owned
    assert f"2.13.0 from {deps / 'torch'} (the plugin's own copy)" in restarted["diagnostics"]


def test_an_install_after_a_failed_one_is_ready_without_restarting_qgis(tmp_path):
    """An earlier install that failed left the plugin's folder empty; QGIS restarted puts it on the
    path and finds no torch; the install that then succeeds makes torch usable at once."""
    if not Path(SYSTEM_PYTHON).is_file() or \
            subprocess.run([SYSTEM_PYTHON, "-s", "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("needs a system Python without torch")
    deps = tmp_path / "deps"
    deps.mkdir()
    wheels = write_wheel(tmp_path / "wheels", "torch", "2.13.0", FAKE_TORCH)
    report = _report(run_after_plugin_start(REPORT_AND_INSTALL, deps, python=SYSTEM_PYTHON,
                                            args=(wheels, sys.executable)))
    assert report["problem"].startswith("DeepCL needs the Python package(s) torch")
    assert report["result"].endswith("DeepCL is ready to use.") and report["problem_after"] == ""
    assert report["torch"][0] == str(deps / "torch" / "__init__.py")


def test_an_old_torch_is_named_with_the_version_needed_and_the_installer_offered(qgis_iface, deepcl_provider,
                                                                                 monkeypatch, tmp_path):
    """A torch older than the engine's minimum (pyproject.toml: torch>=2.1), e.g. 1.12 from another
    plugin or a conda QGIS: the check says so, instead of the model file seeming corrupt later
    ("'weights_only' is an invalid keyword argument"), and the panel offers the installer."""
    import torch
    from qgis.core import QgsSettings
    from qgis.PyQt import sip

    from deepcl_qgis.dependencies import dependency_problem, forget_dependency_check, missing_dependencies
    from deepcl_qgis.dock.install_dialog import InstallDialog
    from deepcl_qgis.dock.panel import DeepCLDock

    monkeypatch.setattr(torch, "__version__", "1.12.1")
    forget_dependency_check()
    try:
        old = f"torch 1.12.1 is older than the 2.1 DeepCL needs (at {Path(torch.__file__).parent})"
        assert missing_dependencies() == ("torch",) and old in dependency_problem().splitlines()[0]
        assert old in check_message("deepcl:detectchanges", {})
        assert old in InstallDialog(plan=_plan(tmp_path / "deps", tmp_path)).intro.text()
        dock = DeepCLDock(qgis_iface)
        assert not dock.form.torch_box.isHidden() and not dock.form.run_button.isEnabled()
        assert dock.form.torch_label.text().startswith(f"DeepCL cannot use {old}.")  # it said "Missing: torch"
        assert dock.form.device_label.text() == "PyTorch cannot be used yet: no device can be used."
        dock.shutdown()
        sip.delete(dock)
    finally:
        QgsSettings().remove("deepcl/panel")
        monkeypatch.undo()
        forget_dependency_check()


def test_stopping_pip_leaves_none_of_its_files_and_does_not_hold_up_qgis(qgis_app, tmp_path, monkeypatch):
    """Stop, or closing the dialog, while pip unpacks torch (a stand-in for pip that fills its
    temporary folder as pip does, hundreds of MB for torch, then works on): pip is killed at once
    and its temporary files go too."""
    import tempfile

    from qgis.PyQt import sip

    from deepcl_qgis.dock.install_dialog import InstallDialog

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    pip = tmp_path / "bin" / "python3"
    pip.parent.mkdir()
    pip.write_text('#!/bin/sh\nmkdir -p "$TMPDIR/pip-target-x/torch"\n'
                   'head -c 10000000 /dev/zero > "$TMPDIR/pip-target-x/torch/_C.so"\n'
                   'echo "Installing collected packages: torch"\nexec sleep 60\n')
    pip.chmod(0o755)
    plan = _plan(tmp_path / "deps", tmp_path, "torch")
    plan.python = str(pip)
    dialog = InstallDialog(plan=plan)

    def stop_while_unpacking(stop, attempt: int) -> None:
        dialog.install_button.click()
        wait_for(lambda: dialog.output.toPlainText().count("Installing collected packages") == attempt, timeout=30)
        assert list(temporary.rglob("pip-target-x/torch/_C.so"))
        started = time.monotonic()
        stop()
        assert time.monotonic() - started < 1.0

    stop_while_unpacking(dialog.close_button.click, 1)  # "Stop"
    wait_for(lambda: dialog.succeeded is not None, timeout=10)
    assert dialog.succeeded is False and "stopped before it finished" in dialog.result_label.text()
    wait_for(lambda: not any(temporary.iterdir()), timeout=10)
    # The window closed, and the dialog deleted before the killed pip's end is seen (its order in the
    # panel, which deletes the dialog when exec_ returns, is up to the event loop).
    stop_while_unpacking(lambda: dialog.reject() or sip.delete(dialog), 2)
    wait_for(lambda: not any(temporary.iterdir()), timeout=10)


# Pure-Python packages torch imports that Debian's Python lacks; pip would fetch them from the
# index with torch. Offline, they are linked from this test environment instead.
TORCH_DEPENDENCIES = ["typing_extensions.py", "networkx", "filelock", "fsspec"]


@pytest.mark.slow
def test_real_torch_wheel_installs_and_the_plugin_imports_torch_from_there(qgis_app, tmp_path, import_paths):
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
        assert ok, message  # this process keeps its own torch, loaded already
        site_packages = Path(torch.__file__).parents[1]
        for name in TORCH_DEPENDENCIES:
            (target / name).symlink_to(site_packages / name)
        script = ("from deepcl_qgis.dependencies import missing_dependencies\n"
                  "import torch\n"
                  "print(torch.__file__, missing_dependencies(), int(torch.ones(3).sum()))\n")
        done = run_after_plugin_start(script, target, python=SYSTEM_PYTHON)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-3:] == [str(target / "torch" / "__init__.py"), "()", "3"]
    finally:
        shutil.rmtree(target, ignore_errors=True)  # 700 MB


def test_torch_s_requirements_installed_with_it_win_over_older_copies_of_qgis_s_python(tmp_path):
    """Debian 12 installs python3-sympy 1.11 beside QGIS; pip puts the sympy 1.14 torch needs into
    the plugin's folder with torch. The system's copy was imported, and training stopped in
    torch.optim ("cannot import name 'equal_valued' from 'sympy.core.numbers'"). The folder here
    holds what pip installs with torch (links to this environment's copies), a numpy, which must
    stay QGIS's own, and a package torch does not require (another plugin's), which must too."""
    from importlib import metadata

    import torch

    from deepcl_qgis.dependencies import requirement_closure

    older = subprocess.run([SYSTEM_PYTHON, "-s", "-c", "import sympy; print(sympy.__version__)"],
                           capture_output=True, text=True)
    if older.returncode != 0 or tuple(map(int, older.stdout.split(".")[:2])) >= (1, 13):
        pytest.skip("needs a system Python with a sympy older than torch needs")
    deps, site = tmp_path / "deps", Path(torch.__file__).parents[1]
    deps.mkdir()
    for distribution in requirement_closure("torch", metadata.distributions(path=[str(site)])):
        for top in {Path(file).parts[0] for file in distribution.files}:
            if (site / top).exists() and not (deps / top).exists():
                (deps / top).symlink_to(site / top)
    for name in ("numpy", "yaml"):  # QGIS's own; another plugin's, which torch does not require
        (deps / name).mkdir()
        (deps / name / "__init__.py").write_text(f"raise ImportError('the folder\\'s {name} was imported')\n")
    script = ("import json, numpy, sympy, torch, yaml\n"
              "weight = torch.nn.Parameter(torch.ones(1))\n"
              "optimizer = torch.optim.AdamW([weight])\n"  # imports torch._dynamo, which needs the newer sympy
              "weight.sum().backward(); optimizer.step()\n"
              "print(json.dumps([sympy.__file__, numpy.__file__, yaml.__file__, weight.item() < 1]))\n")
    done = run_after_plugin_start(script, deps, python=SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr[-2000:]
    sympy_file, numpy_file, yaml_file, stepped = json.loads(done.stdout.splitlines()[-1])
    assert sympy_file == str(deps / "sympy" / "__init__.py") and stepped
    assert not numpy_file.startswith(str(deps)) and not yaml_file.startswith(str(deps))
