"""Detection speed and peak memory against the limits and the peers, in one run (``make bench``).

    python -m benchmarks.detect_bench [--sizes 2048,8192] [--devices cpu,cuda] [--runs pipeline,naive,compute,otb]

For each size, on generated 3-band 8-bit GeoTIFF pairs (:mod:`benchmarks.pairs`), and each device
(CPU always; CUDA when present, with mixed precision): the DeepCL pipeline end to end, the naive
baseline (:mod:`benchmarks.naive`), the network alone on tiles in memory (the compute bound, with
its FLOP count and the machine's matmul peak), the pipeline without the network (the I/O bound),
and Orfeo ToolBox MAD (CPU). Each run is a child
process whose own peak RSS is reported (:mod:`benchmarks.runs`). The table is printed and written
to ``docs/benchmarks.md`` with the machine and the command.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from benchmarks.pairs import generate_pair
from benchmarks.runs import RUNS, measure, with_speed

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "out" / "bench"
DEFAULT_REPORT = ROOT / "docs" / "benchmarks.md"
# The timer covers detect_changes alone: not the process's start, importing torch and the engine, or loading the model.
PIPELINE_RUNS = {"pipeline": "first detection in a process", "pipeline_later": "a later detection in that process"}
LABELS = {**{run: f"DeepCL pipeline, {which}" for run, which in PIPELINE_RUNS.items()},
          "naive": "naive baseline", "compute": "network alone (compute bound)",
          "io": "I/O alone (I/O bound)", "otb": "OTB MAD (classical peer)"}
LABEL_WIDTH = max(len(label) for label in LABELS.values())  # the printed rows' column
TARGET_EFFICIENCY = {"cpu": 0.85, "cuda": 0.8}
TARGET_SPEEDUP = 2.0
TARGET_MEMORY_RATIO = 1.5
GPU_TARGET_MP_S = 100
# Pages written by other commands, which this one's rewrite of the report must not take away.
OTHER_PAGES = [("docs/benchmarks_polygons.md",
                "the polygon step on a noisy change map (`python -m benchmarks.polygons_bench`)"),
               ("docs/benchmarks_bf16.md", "opt-in bf16 on the CPU"),
               ("docs/benchmarks_gpu_e2e.md", "end to end on a lent GPU machine, and its levers"),
               ("docs/benchmarks_gpu.md", "the network alone on a lent GPU machine, tile and batch sizes")]


# --- measuring -------------------------------------------------------------------------------------

def cuda_name() -> Optional[str]:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def run_otb(size: int, args: argparse.Namespace) -> Optional[Dict]:
    from benchmarks.otb_peer import run_otb_mad

    before, after = generate_pair(size, args.cache)
    record = run_otb_mad(before, after, args.cache)
    if record is None:
        return None
    record.update(run="otb", size=size, device="cpu (OTB)", tiles=None,
                  megapixels_per_s=size * size / 1e6 / record["seconds"])
    return record


def measure_size(runs: List[str], size: int, device: str, args: argparse.Namespace) -> List[Dict]:
    """One record per run. A shared machine's speed drifts from one minute to the next, at every
    size: each run is measured ``args.repeats`` times, the runs interleaved round
    after round so that the drift biases no ratio between them, and the median kept (peak RSS: the
    largest; :func:`median_record`)."""
    rounds = [with_later_runs([measure(run, size, device, args) for run in runs]) for _ in range(args.repeats)]
    return [median_record(list(records)) for records in zip(*rounds)]


def median_record(records: List[Dict]) -> Dict:
    """One run's repeats as one row: the median time (of an even count the mean of the middle two,
    not the slower of them: two repeats give their mean), with the fastest and slowest time
    (``seconds_range``: how far the machine drifted) and the largest peak RSS of them all. The
    other figures are those of the repeat at or just below the median."""
    ordered = sorted(records, key=lambda r: r["seconds"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["seconds"] = statistics.median(r["seconds"] for r in ordered)
    median["seconds_range"] = (ordered[0]["seconds"], ordered[-1]["seconds"])
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in records)
    return with_speed(median)


def with_later_runs(records: List[Dict]) -> List[Dict]:
    """Each pipeline record followed by one of its process's later run (same peak RSS: one process)."""
    result = []
    for record in records:
        result.append(record)
        if record["run"] == "pipeline":
            result.append(with_speed(dict(record, run="pipeline_later", seconds=record["later_seconds"])))
    return result


def measure_all(args: argparse.Namespace, devices: List[str]) -> List[Dict]:
    """Every run asked for on each of ``devices`` (at least one: main measures nothing without)."""
    records = []
    for size in args.sizes:
        started = time.perf_counter()
        generate_pair(size, args.cache)
        print(f"pair {size}² ready in {args.cache} ({time.perf_counter() - started:.1f} s)", flush=True)
        for device in devices:
            for record in measure_size([r for r in RUNS if r in args.runs], size, device, args):
                records.append(record)
                print(f"  {device:5} {LABELS[record['run']]:{LABEL_WIDTH}} {record['seconds']:8.1f} s  "
                      f"{record['megapixels_per_s']:7.3f} MP/s  peak RSS {record['peak_rss_mb']:.0f} MiB", flush=True)
        if "otb" in args.runs:
            record = run_otb(size, args)
            if record:
                records.append(record)
                print(f"  cpu   {LABELS['otb']:{LABEL_WIDTH}} {record['seconds']:8.1f} s  "
                      f"{record['megapixels_per_s']:7.3f} MP/s  peak RSS {record['peak_rss_mb']:.0f} MiB", flush=True)
    return records


# --- derived figures -------------------------------------------------------------------------------

def device_kind(record: Dict) -> str:
    return "cuda" if record["device"].startswith("cuda") else "cpu"


def find(records: List[Dict], run: str, size: int, kind: str) -> Optional[Dict]:
    for r in records:
        if r["run"] == run and r["size"] == size and (run == "otb" or device_kind(r) == kind):
            return r
    return None


def derive(records: List[Dict]) -> None:
    """Adds to each DeepCL record: speed vs the naive baseline (first runs only: the baseline too
    runs first in its process), pipeline efficiency (vs the compute bound) and the achieved GFLOP/s
    (network FLOPs of all tiles / seconds)."""
    for r in records:
        if r["run"] in ("otb", "io"):
            continue
        kind = device_kind(r)
        naive = find(records, "naive", r["size"], kind)
        compute = find(records, "compute", r["size"], kind)
        r["vs_naive"] = naive["seconds"] / r["seconds"] if naive and r["run"] != "pipeline_later" else None
        r["efficiency"] = compute["seconds"] / r["seconds"] if compute else None
        r["gflops"] = compute["flops_per_tile"] * r["tiles"] / r["seconds"] / 1e9 if compute else None


def table(records: List[Dict]) -> str:
    lines = ["| size (px) | device | run | tiles | seconds | megapixels/s | vs naive | efficiency | GFLOP/s "
             "| peak RSS (MiB) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['size']:,}² | {r['device']} | {LABELS[r['run']]} | {r['tiles'] or '–'} | "
                     f"{r['seconds']:.1f}{_spread(r.get('seconds_range'))} | {r['megapixels_per_s']:.3f} | "
                     f"{_ratio(r.get('vs_naive'))} | {_fraction(r.get('efficiency'))} | {_number(r.get('gflops'))} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _spread(seconds_range: Optional[Tuple[float, float]]) -> str:
    """" (fastest-slowest)" of a row's repeats, when they differ at the precision shown."""
    if seconds_range is None or f"{seconds_range[0]:.1f}" == f"{seconds_range[1]:.1f}":
        return ""
    return f" ({seconds_range[0]:.1f}-{seconds_range[1]:.1f})"


def _ratio(value: Optional[float]) -> str:
    return f"{value:.2f}×" if value is not None else "–"


def _fraction(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None else "–"


def _number(value: Optional[float]) -> str:
    return f"{value:.1f}" if value is not None else "–"


def limits(records: List[Dict]) -> List[str]:
    """The network's cost and the machine's peak per device, from the compute runs."""
    lines = []
    for kind in ("cpu", "cuda"):
        compute = [r for r in records if r["run"] == "compute" and device_kind(r) == kind]
        if not compute:
            continue
        c = compute[-1]
        height, width = c["flops_tile"]  # the tiles it ran on: an image smaller than --tile is one smaller tile
        per_mp = c["flops_per_tile"] / (height * width / 1e6) / 1e9
        best = max(r["gflops"] for r in compute)
        lines.append(f"- {c['device']}: the network costs {c['flops_per_tile'] / 1e9:.1f} GFLOP per pair of "
                     f"{_tile(height, width)} tiles ({per_mp:.1f} GFLOP per tile megapixel; overlap adds more per "
                     f"image megapixel); machine peak {c['peak_gflops']:.0f} GFLOP/s ({c['peak_what']}, {c['threads']} "
                     f"threads); the network alone reaches {best:.1f} GFLOP/s, {best / c['peak_gflops']:.1%} of "
                     "that peak.")
    for r in [r for r in records if r["run"] == "io"]:
        lines.append(f"- I/O alone, {r['size']:,}², {r['io_threads']} threads: {r['megapixels_per_s']:.1f} MP/s, "
                     "the most this machine's reading, normalising, blending and writing let any network reach "
                     f"(the GPU target is {GPU_TARGET_MP_S} MP/s at 8,192²).")
    return lines


def _tile(height: int, width: int) -> str:
    return f"{width}²" if width == height else f"{width} × {height}"


def verdicts(records: List[Dict]) -> List[str]:
    lines = []
    for kind in ("cpu", "cuda"):
        for r in [r for r in records if r["run"] in PIPELINE_RUNS and device_kind(r) == kind]:
            parts = []
            if r.get("efficiency") is not None:
                ok = r["efficiency"] >= TARGET_EFFICIENCY[kind]
                parts.append(f"efficiency {r['efficiency']:.3f} "  # 0.848 read "0.85 (MISSES ≥ 0.85)" at two
                             f"({'meets' if ok else 'MISSES'} ≥ {TARGET_EFFICIENCY[kind]})")
            if r.get("vs_naive") is not None:
                ok = r["vs_naive"] >= TARGET_SPEEDUP
                parts.append(f"{r['vs_naive']:.2f}× the naive baseline "
                             f"({'meets' if ok else 'MISSES'} ≥ {TARGET_SPEEDUP}×)")
            if parts:
                lines.append(f"- {r['device']}, {r['size']:,}², {PIPELINE_RUNS[r['run']]}: "
                             + "; ".join(parts) + ".")
        pipeline = {r["size"]: r for r in records if r["run"] == "pipeline" and device_kind(r) == kind}
        if len(pipeline) >= 2:
            small, large = pipeline[min(pipeline)], pipeline[max(pipeline)]
            ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
            verdict = "within" if ratio <= TARGET_MEMORY_RATIO else "NOT within"
            lines.append(f"- {kind} peak memory {large['size']}² / {small['size']}²: {ratio:.2f}× ({verdict} the "
                         f"{TARGET_MEMORY_RATIO}× bound) for {large['size'] ** 2 / small['size'] ** 2:.0f}× "
                         "the pixels.")
    return lines


# --- report ----------------------------------------------------------------------------------------

def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = cuda_name()
    return (f"{cpu}, {cores} cores available, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}; GPU: {gpu or 'none (CUDA not available)'}")


def summary(records: List[Dict], args: argparse.Namespace, gpu_note: Optional[str]) -> str:
    return "\n".join([
        table(records), "",
        *([gpu_note, ""] if gpu_note else []),
        "Limits:", *limits(records), "",
        "Targets:", *verdicts(records),
    ])


def write_report(path: Path, records: List[Dict], args: argparse.Namespace, gpu_note: Optional[str],
                 command: str) -> None:
    from deepcl_core.model.inference import MAX_IO_THREADS_BESIDE_ACCELERATOR

    text = "\n".join([
        "# Detection benchmark",
        "",
        ("Generated by `make bench` (`benchmarks/detect_bench.py`)" if path.resolve() == DEFAULT_REPORT.resolve()
         else "Generated by `benchmarks/detect_bench.py` (the command below)") + "; rerun it to refresh this page.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Settings: tile {args.tile} px, overlap {args.overlap} px, batch "
        f"{args.batch or 'the device default (1 on the CPU, 8 on CUDA)'}; precision {args.precision} "
        f"({_precisions(args.precision)}; the naive baseline: fp32); each row is the median of {args.repeats} runs "
        f"(OTB: one{'; of an even count, the mean of the middle two' if args.repeats % 2 == 0 else ''}), "
        "the runs interleaved, its seconds followed by the fastest and slowest where they differ; "
        "outputs ZSTD-compressed (DEFLATE in the naive baseline)",
        f"- Model: {records[0].get('model', '?')}",
        "- Input: generated 3-band 8-bit GeoTIFF pairs (tiled 256², DEFLATE). *DeepCL pipeline*: `detect_changes` "
        "file to file (reading, aligning, normalising, network, blending, writing change and confidence; on the "
        "CPU reading and writing take turns with the network, beside a GPU they run in background threads); "
        "*first detection in a process*: the first `detect_changes` call in a fresh process, timed from the call "
        "(the process's start, importing torch and the engine and loading the model are not counted), as in a "
        "one-off command (on CUDA with cuDNN preparing its kernels for each new input shape); *a later detection "
        "in that process*: the next call, as QGIS runs every detection after its first, or a server (its peak RSS "
        "is the process's, both calls). "
        "*naive baseline*: both images read whole, one tile at a time, plain fp32 network, no prefetching, "
        "outputs written at the end. *network alone*: real tiles already in memory, same batch and precision, "
        "extrapolated to the image's tiles. *I/O alone*: the pipeline with the network replaced by a stand-in "
        "that costs nothing, reading and compressing in the background threads detection uses beside a GPU (one "
        f"per core, up to {MAX_IO_THREADS_BESIDE_ACCELERATOR}), after a warm-up on a small pair and with the "
        "network prepared before the timer (CUDA's start and other one-off costs are not I/O). *OTB MAD*: "
        "`otbcli_MultivariateAlterationDetector` file to file.",
        "- *efficiency*: network-alone time / end-to-end time. *GFLOP/s*: the network's counted FLOPs "
        "(`torch.utils.flop_counter`) over all tiles / time. *peak RSS*: that run's own process (`ru_maxrss`, "
        "in MiB).",
        "",
        summary(records, args, gpu_note),
        "",
        "Other benchmark pages, each written by its own command: "
        + "; ".join(f"[{what}]({_relative(name, path)})" for name, what in OTHER_PAGES
                    if (ROOT / name).resolve() != path.resolve()) + ".",
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _relative(name: str, report: Path) -> str:
    """``name`` (a path from the repository's root) as a link from ``report``'s folder, or as it is
    when the report lies outside the repository (e.g. a GPU machine's output folder)."""
    folder = report.resolve().parent
    return os.path.relpath(ROOT / name, folder) if folder.is_relative_to(ROOT) else name


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detect_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048,8192",
                        help="image sizes in pixels, comma-separated (default 2048,8192)")
    parser.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda; cuda is skipped when absent")
    parser.add_argument("--runs", default=",".join(RUNS + ("otb",)), help="which runs (default: all)")
    parser.add_argument("--tile", type=int, default=768)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, help="0: the device's default, as detection")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per row, median kept (of an even count the mean of the middle two; default 3)")
    parser.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 elsewhere), fp32 or bf16")
    parser.add_argument("--model", type=Path,
                        help="model file; default: the bundled model, else MobileNetV2 + ImageNet")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the generated pairs are kept")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="Markdown file for the table")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write the Markdown file")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    return args


def _precisions(precision: str) -> str:
    import torch

    from deepcl_core.model.inference import autocast_dtype, precision_name

    return ", ".join(f"{precision_name(autocast_dtype(torch.device(d), precision))} on "
                     f"{d.upper() if d == 'cpu' else 'CUDA'}"
                     for d in ("cpu", "cuda"))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    wanted = [d.strip() for d in args.devices.split(",") if d.strip()]
    gpu = cuda_name()
    devices = [d for d in wanted if d == "cpu" or (d == "cuda" and gpu)]
    gpu_note = None if gpu or "cuda" not in wanted else (
        "GPU: not measured on this machine (no CUDA device); on a lent GPU machine, the card named in each "
        "row: docs/benchmarks_gpu_e2e.md (end to end), docs/benchmarks_gpu.md (the network alone, tile and "
        "batch sizes).")
    if not devices:  # e.g. --devices cuda without one: OTB's row alone would replace the whole report
        print(f"nothing measured: none of the devices asked for ({args.devices}) can run here; "
              f"{'the report is left as it was' if not args.no_report else 'no report asked for'}"
              + (f"\n{gpu_note}" if gpu_note else ""))
        return 0
    records = measure_all(args, devices)
    if not records:  # e.g. --runs otb without OTB installed: no report replaced by an empty one
        print("nothing measured: no run asked for is available here; the report is left as it was")
        return 0
    derive(records)
    print(f"\nModel: {records[0].get('model', '?')}\nMachine: {machine()}\n")
    print(summary(records, args, gpu_note))
    if not args.no_report:
        command = "python -m benchmarks.detect_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.report, records, args, gpu_note, command.strip())
        print(f"\nwritten to {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
