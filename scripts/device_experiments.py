"""The trainings of ``scripts/experiments.py`` on a lent GPU machine that has PyTorch but no GDAL,
all variants and seeds at once (one process each), from pairs packed by ``scripts/device_pairs.py``.
The models come back as float16 weights; ``restore`` turns them into ordinary model files in
out/experiments/, where ``make experiments`` finds them and only evaluates (here, with GDAL and the
real detection pipeline).

    there:  python scripts/device_experiments.py train --packed A.npz.xz B.npz.xz --out $OUT
    here:   python scripts/device_experiments.py restore FOLDER_WITH_THE_TARS
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import multiprocessing
import os
import sys
import tarfile
import time
import types
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]


class _NoGdal(types.ModuleType):
    """Stands in for osgeo where it is not installed: importing works, any use fails loudly."""

    def __getattr__(self, name: str) -> "_NoGdal":
        if name.startswith("__"):
            raise AttributeError(name)
        return _NoGdal(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} called, but GDAL is not installed on this machine")


def without_gdal() -> None:
    """Let deepcl_core import where GDAL is missing (the lent GPU machine): a stand-in that fails on use."""
    try:
        import osgeo  # noqa: F401
    except ImportError:
        for name in ("osgeo", "osgeo.gdal", "osgeo.ogr", "osgeo.osr", "osgeo.gdal_array", "osgeo.gdalconst"):
            sys.modules[name] = _NoGdal(name)


def _placeholder_folders(pairs) -> None:
    """Empty before/after/label files where the pairs lie here, so that the trainer's own pair
    search and provenance see the same paths; their contents come from the packed arrays."""
    for pair in pairs:
        for path in (pair.files.before, pair.files.after, pair.files.label):
            target = ROOT / path if not path.is_absolute() else path
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()


def _train_one(job: Tuple[str, int, List[str], argparse.Namespace]) -> Dict:
    variant_name, seed, packed, args = job
    without_gdal()
    import torch

    torch.set_num_threads(1)
    os.chdir(ROOT)
    from device_pairs import load_packed
    import experiments
    from deepcl_core.training import trainer

    loaded = {(p.files.group, p.files.name): p for path in packed for p in load_packed(Path(path))}
    trainer.load_pairs = lambda files, bands, spec: [loaded[(f.group, f.name)] for f in files]
    variant = next(v for v in experiments.VARIANTS if v.name == variant_name)
    model = args.models / f"{experiments.model_stem(variant, seed)}.pt"
    started = time.perf_counter()
    result = experiments.train(experiments.train_options(variant, seed, args, model))
    return {"variant": variant_name, "seed": seed, "model": model.name, "best_epoch": result.best_epoch,
            "val_f1": result.best_metrics.get("f1"), "seconds": round(time.perf_counter() - started, 1)}


def train_all(args: argparse.Namespace) -> int:
    without_gdal()
    from device_pairs import load_packed
    import experiments

    pairs = [p for path in args.packed for p in load_packed(path)]
    _placeholder_folders(pairs)
    args.models.mkdir(parents=True, exist_ok=True)
    jobs = [(v.name, seed, [str(p) for p in args.packed], args) for seed in args.seeds for v in experiments.VARIANTS]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        summaries = pool.map(_train_one, jobs)
    for summary in summaries:
        print(json.dumps(summary))
    (args.models / "device_runs.json").write_text(json.dumps(summaries, indent=2))
    _pack_for_return(args.models, args.out)
    return 0


def _pack_for_return(models: Path, out: Path, limit: int = 15_500_000) -> None:
    """float16 weights in xz tars of at most ``limit`` bytes each (the trip back allows 16 MiB a file)."""
    import torch

    from deepcl_core.model_file import load_model

    out.mkdir(parents=True, exist_ok=True)
    parts: List[List[Tuple[str, bytes]]] = [[]]
    for path in sorted(models.glob("*.pt")):
        bundle = load_model(path)
        document = bundle.to_dict()
        document["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in bundle.state_dict.items()}
        buffer = io.BytesIO()
        torch.save(document, buffer)
        entry = (path.name, lzma.compress(buffer.getvalue()))
        if sum(len(data) for _, data in parts[-1]) + len(entry[1]) > limit:
            parts.append([])
        parts[-1].append(entry)
    parts[-1].append(("device_runs.json", (models / "device_runs.json").read_bytes()))
    for number, part in enumerate(parts):
        with tarfile.open(out / f"models_{number}.tar", "w") as tar:
            for name, data in part:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def restore(args: argparse.Namespace) -> int:
    """The returned tars -> float32 model files in ``args.models`` (the rounding to float16 stays)."""
    import torch

    from deepcl_core.model_file import atomic_torch_save, load_model

    args.models.mkdir(parents=True, exist_ok=True)
    for tar_path in sorted(args.folder.glob("models_*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    (args.models / member.name).write_bytes(data)
                    continue
                document = torch.load(io.BytesIO(lzma.decompress(data)), weights_only=True)
                document["state_dict"] = {k: v.float() if v.is_floating_point() else v
                                          for k, v in document["state_dict"].items()}
                atomic_torch_save(document, args.models / member.name)
                load_model(args.models / member.name)  # proves the file is whole
                print(args.models / member.name)
    return 0


def main() -> int:
    without_gdal()
    from experiments import add_run_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    training = sub.add_parser("train")
    training.add_argument("--packed", type=Path, nargs="+", required=True)
    training.add_argument("--out", type=Path, required=True, help="where the tars of float16 models go")
    add_run_arguments(training, device="cuda")
    training.add_argument("--models", type=Path, default=ROOT / "out" / "experiments")
    back = sub.add_parser("restore")
    back.add_argument("folder", type=Path)
    back.add_argument("--models", type=Path, default=ROOT / "out" / "experiments")
    args = parser.parse_args()
    return train_all(args) if args.command == "train" else restore(args)


if __name__ == "__main__":
    sys.exit(main())
