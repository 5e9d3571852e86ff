"""The plugin and provider: registration, metadata every algorithm needs, unload, and loading
without torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALGORITHMS = {"deepcl:detectchanges", "deepcl:trainmodel", "deepcl:evaluatemodel"}


def test_provider_lists_documented_algorithms(deepcl_provider):
    assert deepcl_provider.id() == "deepcl" and not deepcl_provider.icon().isNull()
    assert {a.id() for a in deepcl_provider.algorithms()} == ALGORITHMS
    for algorithm in deepcl_provider.algorithms():
        assert algorithm.shortHelpString() and algorithm.tags() and algorithm.group()
        assert not algorithm.icon().isNull()
        for parameter in algorithm.parameterDefinitions():
            assert parameter.name().isupper(), parameter.name()
            assert parameter.help(), f"{algorithm.id()} {parameter.name()} has no help"


def test_detect_parameters_and_outputs(deepcl_provider):
    algorithm = deepcl_provider.algorithm("detectchanges")
    device = algorithm.parameterDefinition("DEVICE")
    assert device.options() == ["auto", "cpu", "cuda", "mps"] and device.usesStaticStrings()
    assert {"CHANGED_AREA_M2", "CHANGED_PERCENT"} <= {o.name() for o in algorithm.outputDefinitions()}
    for name in ("TILE_SIZE", "INPUT_SCALE", "OVERLAP", "BATCH_SIZE"):
        assert algorithm.parameterDefinition(name).flags() & algorithm.parameterDefinition(name).FlagAdvanced
    assert not algorithm.parameterDefinition("DISTANCE").createByDefault()
    assert not algorithm.parameterDefinition("POLYGONS").createByDefault()


def test_plugin_gui_and_unload_leave_nothing_behind(qgis_app, qgis_processing, qgis_iface):
    from qgis.core import QgsApplication

    import deepcl_qgis

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("deepcl")
    if existing is not None:  # another test's provider; the deepcl_provider fixture registers a new one
        registry.removeProvider(existing)
    plugin = deepcl_qgis.classFactory(qgis_iface)
    plugin.initGui()
    assert registry.providerById("deepcl") is not None and len(plugin.actions) == 3
    plugin.unload()
    assert registry.providerById("deepcl") is None and plugin.actions == []


def test_plugin_loads_without_torch_and_explains_how_to_install_it(tmp_path):
    """torch is made unimportable in a fresh interpreter: the provider still loads, and running an
    algorithm gives the installation hint instead of an import error."""
    script = tmp_path / "no_torch.py"
    script.write_text(
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "from qgis.core import QgsApplication, QgsProcessingContext\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "from deepcl_qgis.provider import DeepCLProvider\n"
        "provider = DeepCLProvider(); QgsApplication.processingRegistry().addProvider(provider)\n"
        "algorithm = QgsApplication.processingRegistry().createAlgorithmById('deepcl:detectchanges')\n"
        "ok, message = algorithm.checkParameterValues({}, QgsProcessingContext())\n"
        "print('OK' if not ok else 'ACCEPTED'); print(message); print('WARNING', provider.warningMessage())\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "OK\nDeepCL needs the Python package(s) torch" in done.stdout
    assert "pip install" in done.stdout and "WARNING DeepCL needs" in done.stdout
