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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.evaluation import EvaluateOptions, evaluate  # noqa: E402
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


def run_one(variant: Variant, seed: int, args: argparse.Namespace) -> Dict:
    stem = f"{variant.name.replace(' ', '_').replace(',', '').replace('+', '_').replace('=', '')}_seed{seed}"
    model = args.out / f"{stem}.pt"
    result_file = args.out / f"{stem}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if not model.is_file():
        checkpoint = model.with_name(model.name + ".ckpt")
        train(TrainOptions(data_dirs=args.train, val_dirs=args.val, out=model, epochs=args.epochs,
                           iterations_per_epoch=args.iterations, batch_size=args.batch, crop=args.crop, seed=seed,
                           device=args.device, encoder=variant.encoder, gamma=variant.gamma,
                           hscl_weight=variant.hscl_weight, prior_guidance=variant.prior_guidance,
                           resume=checkpoint.is_file(), command_line=f"scripts/experiments.py ({variant.name}, seed {seed})"),
              progress=TerminalProgress(f"train {stem}"))
    report = evaluate(EvaluateOptions(model=model, data_dirs=args.test, pseudo_change=True, device=args.device),
                      progress=TerminalProgress(f"evaluate {stem}"))
    result = {"variant": variant.name, "seed": seed, "pooled": report["pooled"],
              "pseudo_change_fpr": report["pseudo_change"]["false_positive_rate"]}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def summary_rows(results: List[Dict]) -> List[List[str]]:
    rows = []
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant.name]
        cells = [variant.name, str(len(runs))]
        for extract in (lambda r: r["pooled"]["f1"], lambda r: r["pooled"]["iou"],
                        lambda r: r["pooled"]["auc_distance"] or 0.0, lambda r: r["pseudo_change_fpr"]):
            cells.append(_mean_sd([extract(r) for r in runs]))
        rows.append(cells)
    return rows


def _mean_sd(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "n/a"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--val", type=Path, nargs="+", required=True)
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "experiments")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "experiments.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_one(variant, seed, args) for seed in args.seeds for variant in VARIANTS]
    header = ["variant", "seeds", "F1 pooled", "IoU pooled", "AUC of D", "pseudo-change FPR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    budget = (f"{args.epochs} epochs × {args.iterations} steps, batch {args.batch}, crop {args.crop}, "
              f"seeds {args.seeds}, device {args.device}")
    args.report.write_text(
        "# Experiments: the paper's claims on this project's data\n\n"
        f"Produced by `make experiments` (`scripts/experiments.py`); budget per run: {budget}.\n"
        f"Held-out pairs: {', '.join('/'.join(p.parts[-2:]) for p in args.test)}. Mean ± standard deviation over seeds.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
