"""Detection speed and peak memory on generated before/after GeoTIFFs (``make bench``).

    python -m benchmarks.detect_bench [--sizes 2048,8192] [--device cpu] [--tile 512]

Each size runs in its own child process, so the peak resident memory (``ru_maxrss`` of that child,
from ``os.wait4``) belongs to that run alone. The pairs are 3-band 8-bit GeoTIFFs (tiled, DEFLATE)
with a smooth random texture and a few changed patches, cached under ``out/bench/``. The model is
the bundled one when present; otherwise a MobileNetV2 DeepCL network with the ImageNet encoder and
an untrained decoder (the speed and memory are the same; the change map means nothing). The table is
printed and written to ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "out" / "bench"
DEFAULT_REPORT = ROOT / "docs" / "benchmarks.md"
STRIP_ROWS = 512
PIXEL_SIZE_M = 0.5  # a Google-Earth-like resolution, on a UTM grid
ORIGIN = (500000.0, 5400000.0)
EPSG = 32633


# --- generated pairs -----------------------------------------------------------------------------

def _smooth_texture(rng: np.random.Generator, size: int, waves: int = 6):
    """Separable sums of random sine waves: per-row and per-column factors whose outer products
    give a smooth, non-repeating texture in any strip without computing the whole image."""
    freq = rng.uniform(0.002, 0.05, size=(3, waves, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(3, waves, 2))
    amp = rng.uniform(10, 35, size=(3, waves))
    axis = np.arange(size, dtype=np.float32)
    cols = np.sin(axis[None, None, :] * freq[..., 0:1] + phase[..., 0:1]).astype(np.float32)  # (3, waves, size)
    rows = np.cos(axis[None, None, :] * freq[..., 1:2] + phase[..., 1:2]).astype(np.float32)
    return amp.astype(np.float32), rows, cols


def _strip(texture, y0: int, y1: int, rng: np.random.Generator) -> np.ndarray:
    amp, rows, cols = texture
    values = np.einsum("bw,bwy,bwx->byx", amp, rows[:, :, y0:y1], cols, optimize=True) + 120.0
    values += rng.normal(0, 6, size=values.shape).astype(np.float32)  # fine grain
    return values


def _changes(size: int, rng: np.random.Generator, count: int) -> List[tuple]:
    """Square patches (x, y, side) that the after image gets brighter."""
    sides = rng.integers(size // 64, size // 16, count)
    return [(int(rng.integers(0, size - s)), int(rng.integers(0, size - s)), int(s)) for s in sides]


def generate_pair(size: int, folder: Path, seed: int = 0) -> tuple:
    """before_<size>.tif and after_<size>.tif in ``folder``, generated once and reused."""
    from osgeo import gdal, osr

    folder.mkdir(parents=True, exist_ok=True)
    before, after = folder / f"before_{size}.tif", folder / f"after_{size}.tif"
    if before.is_file() and after.is_file():
        return before, after
    rng = np.random.default_rng(seed)
    texture = _smooth_texture(rng, size)
    patches = _changes(size, rng, count=max(4, size // 256))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "PREDICTOR=2",
               "ZLEVEL=1", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    datasets = {}
    for path in (before, after):
        tmp = path.with_name(path.name + ".partial")
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, 3, gdal.GDT_Byte, options)
        ds.SetGeoTransform((ORIGIN[0], PIXEL_SIZE_M, 0, ORIGIN[1], 0, -PIXEL_SIZE_M))
        ds.SetProjection(srs.ExportToWkt())
        for index, interp in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand), start=1):
            ds.GetRasterBand(index).SetColorInterpretation(interp)
        datasets[path] = (tmp, ds)
    for y0 in range(0, size, STRIP_ROWS):
        y1 = min(y0 + STRIP_ROWS, size)
        base = _strip(texture, y0, y1, rng)
        # The after date: a little brighter overall (a pseudo-change) plus real changed patches.
        later = base * 1.05 + 4 + rng.normal(0, 3, size=base.shape).astype(np.float32)
        for x, y, side in patches:
            top, bottom = max(y, y0), min(y + side, y1)
            if top < bottom:
                later[:, top - y0:bottom - y0, x:x + side] = 230 - 0.3 * later[:, top - y0:bottom - y0, x:x + side]
        for path, values in ((before, base), (after, later)):
            pixels = np.clip(values, 0, 255).astype(np.uint8)
            ds = datasets[path][1]
            for band in range(3):
                ds.GetRasterBand(band + 1).WriteArray(pixels[band], 0, y0)
    for path, (tmp, ds) in datasets.items():
        ds.FlushCache()
        ds = None
        datasets[path] = None
        os.replace(tmp, path)
    return before, after


# --- one measured run (the child process) --------------------------------------------------------

def benchmark_model(model_path: Optional[Path]):
    """The bundled (or given) model, else MobileNetV2 DeepCL with the ImageNet encoder. Returns
    (bundle, description)."""
    from deepcl_core.detect import bundled_model_path
    from deepcl_core.model import NetworkConfig, build_network
    from deepcl_core.model.pretrained import imagenet_weights_path, load_imagenet_weights
    from deepcl_core.model_file import ModelBundle, load_model

    path = model_path or bundled_model_path()
    if path.is_file():
        return load_model(path), f"model file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    import torch

    torch.manual_seed(0)
    config = NetworkConfig()
    network = build_network(config)
    if imagenet_weights_path().is_file():
        load_imagenet_weights(network.encoder)
        what = "MobileNetV2 DeepCL, ImageNet encoder, untrained decoder (no trained model bundled yet)"
    else:
        what = "MobileNetV2 DeepCL, random weights (no trained model, no ImageNet weights: run make setup)"
    return ModelBundle(config, network.state_dict(), trained=False), what


def run_child(args: argparse.Namespace) -> None:
    import logging

    from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

    logging.getLogger("deepcl_core").setLevel(logging.ERROR)  # the untrained-model warning is expected here
    bundle, what = benchmark_model(args.model)
    before, after = generate_pair(args.child, args.cache)
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="run-") as folder:
        outputs = DetectOutputs(change=Path(folder) / "change.tif", confidence=Path(folder) / "confidence.tif")
        options = DetectOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, device=args.device)
        started = time.perf_counter()
        result = detect_changes(before, after, outputs, options, model=bundle)
        seconds = time.perf_counter() - started
    print(json.dumps({"size": args.child, "seconds": seconds, "tiles": result.tiles, "device": result.device,
                      "model": what, "changed_percent": result.changed_percent}))


def measure(size: int, args: argparse.Namespace) -> Dict:
    """Run one size in a child process; its own peak RSS comes from ``os.wait4``."""
    command = [sys.executable, "-m", "benchmarks.detect_bench", "--child", str(size), "--cache", str(args.cache),
               "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch),
               "--device", args.device]
    if args.model:
        command += ["--model", str(args.model)]
    with tempfile.TemporaryFile("w+") as stdout:
        child = subprocess.Popen(command, cwd=ROOT, stdout=stdout)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"detect_bench: the {size}² run failed with status {child.returncode}")
    record = json.loads(text.strip().splitlines()[-1])
    record["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    record["megapixels_per_s"] = size * size / 1e6 / record["seconds"]
    return record


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
    return f"{cpu}, {cores} cores available, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"


def table(records: List[Dict]) -> str:
    lines = ["| size (px) | megapixels | tiles | seconds | megapixels/s | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['size']:,} × {r['size']:,} | {r['size'] ** 2 / 1e6:.1f} | {r['tiles']} | "
                     f"{r['seconds']:.1f} | {r['megapixels_per_s']:.3f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def memory_ratio(records: List[Dict]) -> Optional[str]:
    by_size = {r["size"]: r for r in records}
    if len(by_size) < 2:
        return None
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    verdict = "within" if ratio <= 1.5 else "NOT within"
    return (f"Peak memory {large['size']}² / {small['size']}²: {ratio:.2f}× ({verdict} the 1.5× bound) "
            f"for {large['size'] ** 2 / small['size'] ** 2:.0f}× the pixels.")


def write_report(path: Path, records: List[Dict], command: str) -> None:
    ratio = memory_ratio(records)
    text = "\n".join([
        "# Detection benchmark",
        "",
        "Generated by `make bench` (`benchmarks/detect_bench.py`); rerun it to refresh this page.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Device: {records[0]['device']}; tile {records[0]['tile']} px, overlap {records[0]['overlap']} px, "
        f"batch {records[0]['batch']}",
        f"- Model: {records[0]['model']}",
        "- Input: generated 3-band 8-bit GeoTIFF pairs (tiled, DEFLATE), before and after; end-to-end time "
        "of `detect_changes` (reading, aligning, normalising, network, blending, writing change and confidence).",
        "- Peak RSS: the child process that ran one size (`ru_maxrss`), model and torch included.",
        "",
        table(records),
        "",
        *([ratio, ""] if ratio else []),
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detect_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048,8192", help="image sizes in pixels, comma-separated (default 2048,8192)")
    parser.add_argument("--device", default="cpu", help="device for detection (default cpu)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", type=Path, help="model file; default: the bundled model, else MobileNetV2 + ImageNet")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the generated pairs are kept")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="Markdown file for the table")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write the Markdown file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    records = []
    for size in sizes:
        started = time.perf_counter()
        generate_pair(size, args.cache)
        print(f"pair {size}² ready in {args.cache} ({time.perf_counter() - started:.1f} s); detecting…", flush=True)
        record = measure(size, args)
        record.update(tile=args.tile, overlap=args.overlap, batch=args.batch)
        records.append(record)
        print(f"  {record['seconds']:.1f} s, {record['megapixels_per_s']:.3f} MP/s, peak RSS "
              f"{record['peak_rss_mb']:.0f} MB", flush=True)
    print(f"\nModel: {records[0]['model']}\nMachine: {machine()}\n")
    print(table(records))
    ratio = memory_ratio(records)
    if ratio:
        print("\n" + ratio)
    if not args.no_report:
        command = "python -m benchmarks.detect_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.report, records, command.strip())
        print(f"\nwritten to {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
