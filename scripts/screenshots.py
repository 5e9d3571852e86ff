"""Screenshots of the QGIS main window with the DeepCL panel docked, before and after a run on
the sample pair: ``make screenshots`` → docs/screenshots/panel_before_run.png, panel_after_run.png.

Starts the real ``qgis`` under Xvfb with a fresh profile and scripts/screenshot_session.py. Uses
the bundled model when there is one, else a small untrained fixture model (and says so in
docs/screenshots/CAPTION.md)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "resources" / "models" / "deepcl_default.pt"
SHOTS = ("panel_before_run.png", "panel_after_run.png")


def fixture_model(folder: Path) -> Path:
    """The same tiny untrained network the plugin tests use."""
    import torch

    sys.path.insert(0, str(REPO))
    from deepcl_core.model import NetworkConfig, build_network
    from deepcl_core.model_file import ModelBundle, save_model

    torch.manual_seed(0)
    config = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))
    path = folder / "fixture_untrained.pt"
    save_model(ModelBundle(config, build_network(config).state_dict(), trained=False), path)
    return path


def run_qgis(work: Path, model: Path, fixture: bool, timeout: int) -> None:
    import torch

    env = {**os.environ, "DEEPCL_REPO": str(REPO), "DEEPCL_SCREENSHOT_OUT": str(work),
           "DEEPCL_SCREENSHOT_MODEL": str(model), "DEEPCL_SCREENSHOT_THRESHOLD": "0.3" if fixture else "",
           "DEEPCL_SCREENSHOT_TOP_DECILE": "1" if fixture else "0",
           # QGIS runs the system Python: the repository and this environment's torch go on its path.
           "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(torch.__file__).parents[1])]),
           "QGIS_DISABLE_MESSAGE_HOOKS": "1",
           "GDAL_PAM_ENABLED": "NO"}  # no .aux.xml statistics files beside the sample pair
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display, not offscreen
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
               "--noplugins", "--profiles-path", str(work / "profiles"), "--code",
               str(REPO / "scripts" / "screenshot_session.py")]
    subprocess.run(command, env=env, timeout=timeout, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def caption(model_is_bundled: bool, summary: str) -> str:
    model = ("the bundled model (resources/models/deepcl_default.pt)" if model_is_bundled else
             "a small **untrained fixture model** (no trained model was bundled yet): the change map shows "
             "the plumbing, not the accuracy; after the run the threshold slider was moved up near the top of its "
             "confidence range (see the summary line), so the change layer shows a re-classification rather than "
             "all or nothing")
    return ("# DeepCL panel screenshots\n\n"
            "QGIS 3.22 under Xvfb, the DeepCL panel docked on the right, the sample pair "
            "(`resources/sample`, OSCD Hong Kong, 2016-09-27 → 2018-03-23).\n\n"
            "- `panel_before_run.png`: layers preselected (older date first), ready to run.\n"
            f"- `panel_after_run.png`: after one click: change and confidence layers, styled, in a group (the "
            "confidence unticked, so the change is seen over the imagery); "
            f"summary line \"{summary}\".\n\nModel: {model}.\n\nMade by `make screenshots`.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deepcl_shots_") as tmp:
        work = Path(tmp)
        bundled = BUNDLED.is_file()
        model = BUNDLED if bundled else fixture_model(work)
        run_qgis(work, model, not bundled, args.timeout)
        if (work / "session_error.txt").is_file():
            sys.stderr.write((work / "session_error.txt").read_text(encoding="utf-8"))
            return 1
        missing = [name for name in SHOTS if not (work / name).is_file()]
        if missing:
            sys.stderr.write(f"QGIS wrote no {', '.join(missing)}\n")
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        for name in SHOTS:
            shutil.copyfile(work / name, args.out / name)
        summary = (work / "summary.txt").read_text(encoding="utf-8").strip()
        (args.out / "CAPTION.md").write_text(caption(bundled, summary), encoding="utf-8")
    sys.stdout.write(f"wrote {', '.join(str(args.out / n) for n in SHOTS)}\n")  # a script, not the library
    return 0


if __name__ == "__main__":
    sys.exit(main())
