"""The paper's claims, measured on this project's split with one budget and one seed set:
DeepCL (HSCL + prior guidance) against the same network trained with BCE + Dice alone, for both
encoders (adaptability), gamma = 2 against gamma = 0 (hard samples), and each variant's
pseudo-change false-positive rate. Writes docs/experiments.md; ``make experiments`` runs it.

Every run is resumable: a finished model or evaluation is reused, an interrupted training resumes
from its checkpoint, so the command can simply be run again after a cut-off."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.evaluation import EvaluateOptions, evaluate  # noqa: E402
from deepcl_core.metrics import pooled_by_group  # noqa: E402
from deepcl_core.model_file import load_model  # noqa: E402
from deepcl_core.progress import TerminalProgress  # noqa: E402
from deepcl_core.training import TrainOptions, train  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    encoder: str
    hscl_weight: float = 1.0
    prior_guidance: bool = True
    gamma: float = 2.0


VARIANTS = (
    Variant("DeepCL, MobileNetV2", "mobilenet_v2"),
    Variant("BCE+Dice only, MobileNetV2", "mobilenet_v2", hscl_weight=0.0, prior_guidance=False),
    Variant("DeepCL gamma=0, MobileNetV2", "mobilenet_v2", gamma=0.0),
    Variant("DeepCL, simple CNN", "simple_cnn"),
    Variant("BCE+Dice only, simple CNN", "simple_cnn", hscl_weight=0.0, prior_guidance=False),
)


def model_stem(variant: Variant, seed: int) -> str:
    return f"{variant.name.replace(' ', '_').replace(',', '').replace('+', '_').replace('=', '')}_seed{seed}"


def train_options(variant: Variant, seed: int, args: argparse.Namespace, model: Path) -> TrainOptions:
    """One run of the table: every variant and seed gets the same data, budget and schedule."""
    return TrainOptions(data_dirs=args.train, val_dirs=args.val, out=model, epochs=args.epochs,
                        iterations_per_epoch=args.iterations, batch_size=args.batch, crop=args.crop, seed=seed,
                        device=args.device, encoder=variant.encoder, gamma=variant.gamma,
                        hscl_weight=variant.hscl_weight, prior_guidance=variant.prior_guidance,
                        resume=model.with_name(model.name + ".ckpt").is_file(),
                        command_line=f"scripts/experiments.py ({variant.name}, seed {seed})")


def run_one(variant: Variant, seed: int, args: argparse.Namespace) -> Dict:
    stem = model_stem(variant, seed)
    model = args.out / f"{stem}.pt"
    result_file = args.out / f"{stem}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if not model.is_file():
        train(train_options(variant, seed, args, model), progress=TerminalProgress(f"train {stem}"))
    report = evaluate(EvaluateOptions(model=model, data_dirs=args.test, pseudo_change=True, device=args.device),
                      progress=TerminalProgress(f"evaluate {stem}"))
    provenance = load_model(model).provenance
    result = {"variant": variant.name, "seed": seed, "threshold": report["threshold"], "pooled": report["pooled"],
              "thresholds_by_pixel_size": report["thresholds_by_pixel_size"],
              "input_scales_by_pixel_size": report["input_scales_by_pixel_size"],
              "per_dataset_f1": _per_dataset_f1(report["per_pair"], args.test),
              "pseudo_change_fpr": report["pseudo_change"]["false_positive_rate"],
              "validation_f1": provenance.get("validation_metrics", {}).get("pooled", {}).get("f1"),
              "trained_on": provenance.get("hardware", {}).get("device"),
              "training_seconds": provenance.get("seconds")}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def _per_dataset_f1(per_pair: Dict[str, Dict], test_dirs: Sequence[Path]) -> Dict[str, float]:
    """F1 pooled over the pixels of each data set's held-out pairs (the folder above a pair names its set)."""
    pooled = pooled_by_group(per_pair, {folder.name: folder.parent.name for folder in test_dirs})
    return {dataset: confusion.metrics()["f1"] for dataset, confusion in sorted(pooled.items())}


DATASETS = ("dsifn", "levir", "oscd", "sztaki")


def summary_rows(results: List[Dict]) -> List[List[str]]:
    rows = []
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant.name]
        cells = [variant.name, str(len(runs))]
        extracts = [lambda r: r["validation_f1"], lambda r: r["pooled"]["f1"]]
        extracts += [lambda r, d=d: r["per_dataset_f1"].get(d) for d in DATASETS]
        extracts += [lambda r: r["pooled"]["iou"], lambda r: r["pooled"]["auc_distance"],
                     lambda r: r["pseudo_change_fpr"]]
        cells += [_mean_sd([extract(r) for r in runs]) for extract in extracts]
        rows.append(cells)
    return rows


DEVICE_ROUTE = """
These trainings ran on a lent GPU machine without GDAL, through `scripts/device_experiments.py`:
the pairs were read, aligned and normalised here by the project's loader and travelled quantised
to 8 bits (`scripts/device_pairs.py`); the models came back with float16 weights
(`device_experiments.py restore`), and `make experiments` evaluated them here with the real
detection pipeline.
"""


def rerun_note(commit: str, clean: bool) -> str:
    """What a rerun gives: the models are reused, missing ones trained with the recipe checked out,
    so only the same models at the same commit give the same table."""
    again = (f"`git checkout {commit} && make experiments`" if clean
             else "`make experiments` at the commit that holds those changes")
    return f"""
`make experiments` evaluates the models it finds in `out/experiments/` (not committed; a `.json`
beside a model is its cached result) and trains the missing ones on the local device with the
training recipe of the commit checked out. Only these models give this table again: with them in
`out/experiments/` and their `.json` files removed, {again}.
Models trained anew, at this commit or a later one (`git log {commit}..HEAD -- deepcl_core/training`
lists what training has changed since), are other runs, with other figures.
"""


def checked_out_commit() -> Tuple[str, bool]:
    """The commit checked out (short hash) and whether the tracked files are as committed."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "--short=7", "HEAD"), not git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "", False


COMPARISONS = (("HSCL + prior guidance against BCE + Dice alone, MobileNetV2", "DeepCL, MobileNetV2",
                "BCE+Dice only, MobileNetV2"),
               ("HSCL + prior guidance against BCE + Dice alone, simple CNN", "DeepCL, simple CNN",
                "BCE+Dice only, simple CNN"),
               ("gamma = 2 against gamma = 0 (hard-sample focusing), MobileNetV2", "DeepCL, MobileNetV2",
                "DeepCL gamma=0, MobileNetV2"))


def comparison_lines(results: List[Dict]) -> List[str]:
    """Each claim as differences of seed means (first variant minus second), and the data sets where
    the first is ahead or behind: read off the table, so the text cannot drift from the numbers."""
    def mean(variant: str, extract) -> Optional[float]:
        values = [value for value in (extract(r) for r in results if r["variant"] == variant) if value is not None]
        return statistics.mean(values) if values else None

    def difference(extract) -> Optional[float]:
        first_mean, second_mean = mean(first, extract), mean(second, extract)
        return None if first_mean is None or second_mean is None else first_mean - second_mean

    lines = []
    for title, first, second in COMPARISONS:
        if not any(r["variant"] == first for r in results) or not any(r["variant"] == second for r in results):
            continue
        delta = {name: difference(extract) for name, extract in (
            ("held-out F1", lambda r: r["pooled"]["f1"]), ("AUC of D", lambda r: r["pooled"]["auc_distance"]),
            ("validation F1", lambda r: r["validation_f1"]), ("pseudo-change FPR", lambda r: r["pseudo_change_fpr"]))}
        per_set = {d: difference(lambda r, d=d: r["per_dataset_f1"].get(d)) for d in DATASETS}
        ahead = [d.upper() for d, v in per_set.items() if v is not None and v > 0]
        behind = [d.upper() for d, v in per_set.items() if v is not None and v <= 0]
        lines.append(f"- {title}: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:+.3f}'}" for k, v in delta.items())
                     + f"; F1 ahead on {', '.join(ahead) or 'none'}, not ahead on {', '.join(behind) or 'none'}.")
    return lines


def _mean_sd(values: Sequence[Optional[float]]) -> str:
    """Mean ± sample standard deviation (n - 1) of the runs that have the figure; a run without it
    (a model of no validation metrics) is left out, not counted as 0."""
    values = [value for value in values if value is not None]
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "n/a"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _coarse_settings(results: List[Dict]) -> str:
    """The thresholds and enlargements of pixel-size classes the models have (calibrated on Sentinel-2
    validation pairs), which their OSCD figures were judged at: "" when none has any."""
    classes = [*(size for r in results for size, _ in r.get("thresholds_by_pixel_size") or ()),
               *(size for r in results for size, _ in r.get("input_scales_by_pixel_size") or ())]
    if not classes:
        return ""
    thresholds = sorted({t for r in results for _, t in r.get("thresholds_by_pixel_size") or ()})
    scales = sorted({k for r in results for _, k in r.get("input_scales_by_pixel_size") or ()})
    return (f"; for pixels of {min(classes):g} m or coarser {', '.join(f'{t:.3g}' for t in thresholds) or 'the same'}"
            + (f", the images enlarged {', '.join(f'{k}×' for k in scales)}" if scales else ""))


def add_run_arguments(parser: argparse.ArgumentParser, device: str = "auto") -> None:
    """The pairs, seeds and budget of the runs: one definition for here and the GPU runner."""
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--val", type=Path, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--device", default=device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "experiments")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "experiments.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_one(variant, seed, args) for seed in args.seeds for variant in VARIANTS]
    header = ["variant", "seeds", "validation F1", "held-out F1 pooled", *(f"F1 {d.upper()}" for d in DATASETS),
              "IoU pooled", "AUC of D", "pseudo-change FPR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    trained_on = sorted({str(r.get("trained_on")) for r in results})
    thresholds = sorted({r["threshold"] for r in results})
    budget = (f"{args.epochs} epochs × {args.iterations} steps, batch {args.batch}, crop {args.crop}, "
              f"seeds {args.seeds}; trained on {', '.join(trained_on)}")
    route = DEVICE_ROUTE if (args.out / "device_runs.json").is_file() else ""
    commit, clean = checked_out_commit()
    where = (f" at commit {commit}" + ("" if clean else " with uncommitted changes")) if commit else ""
    args.report.write_text(
        "# Experiments: the paper's claims on this project's data\n\n"
        f"Produced by `make experiments` (`scripts/experiments.py`){where}; budget per run: {budget}.\n"
        f"Held-out pairs: {', '.join('/'.join(p.parts[-2:]) for p in args.test)}. Mean ± sample standard deviation "
        "(n − 1) over seeds; F1 per data set pooled over its held-out pairs' pixels, at each model's own threshold "
        f"({', '.join(f'{t:g}' for t in thresholds)}{_coarse_settings(results)}).\n\n"
        + "\n".join(lines) + "\n\nDifferences of the seed means (first minus second):\n\n"
        + "\n".join(comparison_lines(results)) + "\n" + route + (rerun_note(commit, clean) if commit else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
