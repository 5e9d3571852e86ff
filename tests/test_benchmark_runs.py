"""Every kind of `make bench` run works on a small generated pair (the figures themselves belong to
the benchmark, not to tests): a run that breaks would otherwise be found only by the next
benchmark, minutes into it."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from benchmarks.detect_bench import median_record, table
from benchmarks.runs import RUNS, child

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def engine_log_level_kept():
    """A run's main, called here in this process, quiets the engine's logger for its own process:
    the tests after these ones missed the engine's warnings (a QGIS test of them failed after these)."""
    logger = logging.getLogger("deepcl_core")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("run", RUNS)
def test_each_run_kind_reports_its_figures(run, tmp_path, capsys):
    assert child(["--run", run, "--size", "512", "--device", "cpu", "--tile", "256", "--overlap", "32",
                  "--cache", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["run"] == run and record["size"] == 512
    assert record["seconds"] > 0 and record["tiles"] == 9  # 512² in 256² tiles, overlap 32: 3 × 3
    if run == "pipeline":  # and a later run in the same process
        assert record["later_seconds"] > 0
    if run == "compute":
        assert record["flops_per_tile"] > 0 and record["peak_gflops"] > 0


def test_a_childs_peak_memory_is_its_own_not_the_benchmarks():
    """wait4 on a child the benchmark started itself reported at least the benchmark's own peak (Linux
    carries the high-water mark into exec): the 8,192² rows of the network alone, I/O alone and OTB
    all read 928 MB, the benchmark's. The child here touches 100 MB while this process holds more."""
    import os
    import subprocess
    import sys

    from benchmarks.peak_rss import run_measuring_peak

    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # resident: this process's peak above 400 MB
    command = [sys.executable, "-S", "-c", "b = bytearray(100 * 2**20); b[::4096] = b'1' * len(b[::4096])"]
    usage = run_measuring_peak(command)
    assert usage.status == 0 and 100 < usage.peak_rss_mb < 160 and usage.minor_faults > 100 * 2**20 // 4096
    assert 0 < usage.seconds < 30
    _, _, usage = os.wait4(subprocess.Popen(command).pid, 0)  # how it was measured: the floor is ours
    assert usage.ru_maxrss / 1024 > 400
    del ballast


def test_a_row_keeps_the_median_run_with_the_spread_of_its_repeats():
    repeats = [{"seconds": 2.5, "peak_rss_mb": 600, "tiles": 9, "size": 2048},
               {"seconds": 2.1, "peak_rss_mb": 640, "tiles": 9, "size": 2048},
               {"seconds": 2.2, "peak_rss_mb": 610, "tiles": 9, "size": 2048}]
    row = median_record(repeats)
    assert row["seconds"] == 2.2 and row["seconds_range"] == (2.1, 2.5) and row["peak_rss_mb"] == 640
    assert table([dict(row, device="cpu", run="compute", megapixels_per_s=1.9)]).endswith(
        "| 2,048² | cpu | network alone (compute bound) | 9 | 2.2 (2.1-2.5) | 1.900 | – | – | – | 640 |")
    alike = median_record([dict(r, seconds=2.21 + i / 1000) for i, r in enumerate(repeats)])
    assert "| 2.2 |" in table([dict(alike, device="cpu", run="compute", megapixels_per_s=1.9)])


def test_two_repeats_give_their_mean_not_the_slower(tmp_path):
    """gpu_checks.sh runs the bench with --repeats 2: its rows were the slower run of each pair, and
    called the median. Now the mean of the middle two (its speed with it), and the report says so."""
    from benchmarks.detect_bench import write_report

    row = median_record([{"seconds": 3.0, "peak_rss_mb": 600, "tiles": 9, "size": 1000},
                         {"seconds": 2.0, "peak_rss_mb": 640, "tiles": 9, "size": 1000}])
    assert row["seconds"] == 2.5 and row["megapixels_per_s"] == pytest.approx(1 / 2.5)
    assert row["seconds_range"] == (2.0, 3.0) and row["peak_rss_mb"] == 640
    assert median_record([{"seconds": s, "peak_rss_mb": 1, "size": 1000} for s in (4, 1, 3, 2)])["seconds"] == 2.5
    args = argparse.Namespace(tile=768, overlap=64, batch=None, precision="auto", repeats=2)
    write_report(tmp_path / "gpu.md", [dict(row, device="cuda:0", run="naive")], args, None, "python -m x")
    text = (tmp_path / "gpu.md").read_text()
    assert "median of 2 runs (OTB: one; of an even count, the mean of the middle two)" in text


def test_the_jpeg2000_benchmark_reports_both_formats(tmp_path, capsys):
    """``python -m benchmarks.jpeg2000`` on a small pair: its JPEG 2000 copy is made and both rows
    are printed with their figures."""
    from benchmarks import jpeg2000

    assert jpeg2000.main(["--size", "512", "--rounds", "1", "--cache", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| GeoTIFF", "| JPEG 2000"))]
    assert len(rows) == 2 and (tmp_path / "before_512.jp2").is_file()
    assert not list(tmp_path.glob("*.partial*"))  # nothing of the writing left behind
    for row in rows:
        decoding, io_alone, statistics = (float(cell) for cell in row.strip("|").split("|")[1:])
        assert io_alone > 0 and decoding >= 0 and 0 <= statistics < io_alone  # 0.00 s possible at this size


def test_every_gpu_lever_variant_runs(tmp_path, capsys):
    """``python -m benchmarks.gpu_levers`` tried on the CPU, as its help allows, on a small pair:
    every variant but the CUDA graph (which needs CUDA) runs and gets a row. Its GPU figures are
    measured only on a lent GPU machine; a variant broken by a change of detection's internals
    (one was, by RasterOutputs' new argument) would otherwise cost that machine's minutes."""
    from benchmarks import gpu_levers

    assert gpu_levers.main(["--device", "cpu", "--size", "256", "--rounds", "1", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if ": failed:" in line]
    assert len(failed) == 1 and failed[0].startswith("  network as a CUDA graph: failed:")  # torch's words may change
    assert "| peak RSS (MiB) |" in out  # the kernel's high-water mark is in KiB: / 1024 is MiB
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == len(gpu_levers.variants(gpu_levers.graphed_run_network())) - 1
    assert all(float(row.split("|")[2]) > 0 for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device would be measured")
def test_the_bench_asked_only_for_a_gpu_it_lacks_says_so_and_keeps_the_report(tmp_path, capsys):
    """``--devices cuda`` on a machine without one (the GPU check script run elsewhere) measures
    nothing: it says so at once, and leaves the report as it was rather than an empty table over it."""
    from benchmarks import detect_bench

    report = tmp_path / "benchmarks.md"
    report.write_text("earlier figures\n")
    assert detect_bench.main(["--devices", "cuda", "--sizes", "256", "--runs", "pipeline", "--cache", str(tmp_path),
                              "--report", str(report)]) == 0
    assert "GPU: not measured on this machine" in capsys.readouterr().out
    assert report.read_text() == "earlier figures\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md"]  # no pair generated for nothing


def test_a_report_names_the_command_that_wrote_it(tmp_path):
    """`make bench` writes docs/benchmarks.md; another report (bf16, a GPU's) is refreshed by its own command."""
    import argparse

    from benchmarks.detect_bench import write_report

    row = {"seconds": 2.2, "peak_rss_mb": 640, "tiles": 9, "size": 2048, "device": "cpu", "run": "naive",
           "megapixels_per_s": 1.9}
    args = argparse.Namespace(tile=768, overlap=64, batch=None, precision="bf16", repeats=1)
    write_report(tmp_path / "bf16.md", [row], args, None, "python -m benchmarks.detect_bench --precision bf16")
    assert "Generated by `benchmarks/detect_bench.py` (the command below)" in (tmp_path / "bf16.md").read_text()


def test_the_io_bound_times_no_network_preparation(tmp_path, capsys, monkeypatch):
    """The I/O bound timed detection's preparation of its network, on CUDA the process's first use of
    the GPU (the CUDA context's creation): no bound. A network that takes 2 s to build stands for
    such a one-off cost here; the I/O alone on a 256² pair takes well under that."""
    from deepcl_core.model_file import ModelBundle

    build = ModelBundle.build

    def slow_build(self):
        time.sleep(2)
        return build(self)

    monkeypatch.setattr(ModelBundle, "build", slow_build)
    assert child(["--run", "io", "--size", "256", "--device", "cpu", "--tile", "256", "--overlap", "32",
                  "--cache", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["tiles"] == 1 and 0 < record["seconds"] < 1.5


def test_the_compute_row_counts_the_flops_of_the_tiles_it_ran(tmp_path, capsys):
    """At 512² with the default 768 px tile the grid's one tile is 512²: its FLOPs, not a 768²
    tile's (2.25× as many), give the GFLOP/s."""
    from benchmarks.compute import benchmark_bundle, flops_per_tile

    assert child(["--run", "compute", "--size", "512", "--device", "cpu", "--cache", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bundle, _ = benchmark_bundle()
    assert record["tiles"] == 1 and record["flops_tile"] == [512, 512]
    assert record["flops_per_tile"] == flops_per_tile(bundle, 512, bundle.config.in_channels)
    assert record["flops_per_tile"] < flops_per_tile(bundle, 768, bundle.config.in_channels) / 2


def test_the_rows_say_what_the_first_run_times():
    """Its timer covers detect_changes alone, not the process's start, imports or the model's loading."""
    row = {"seconds": 2.0, "peak_rss_mb": 600, "tiles": 9, "size": 2048, "device": "cpu", "megapixels_per_s": 2}
    rows = table([dict(row, run="pipeline"), dict(row, run="pipeline_later")])
    assert "| DeepCL pipeline, first detection in a process |" in rows
    assert "| DeepCL pipeline, a later detection in that process |" in rows
    assert "first run" not in rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device would be measured")
def test_a_gpu_asked_for_and_absent_lets_no_otb_row_replace_the_report(tmp_path, capsys):
    """``--devices cuda`` with every run (OTB's among them) on a machine without CUDA measured OTB
    alone and wrote its one row over the report, "Model: ?" and no limits or targets."""
    from benchmarks import detect_bench

    report = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", report)
    before = report.read_text()
    assert detect_bench.main(["--devices", "cuda", "--sizes", "256", "--cache", str(tmp_path),
                              "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "nothing measured: none of the devices asked for (cuda) can run here" in out
    assert "OTB" not in out and report.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md"]


def test_a_rerun_keeps_the_link_to_the_polygon_steps_page(tmp_path, capsys):
    """make bench rewrites its report whole: the polygon step's section, added there by hand, was lost
    on a rerun. It has its own page, which the report links to, rerun or not."""
    from benchmarks import detect_bench

    polygons = ROOT / "docs" / "benchmarks_polygons.md"
    assert "# The polygon step on a noisy change map" in polygons.read_text()
    assert "python -m benchmarks.polygons_bench --sizes 1024,2048,4096" in polygons.read_text()
    assert "(benchmarks_polygons.md)" in (ROOT / "docs" / "benchmarks.md").read_text()
    report = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", report)
    assert detect_bench.main(["--devices", "cpu", "--sizes", "256", "--runs", "io", "--repeats", "1",
                              "--tile", "256", "--cache", str(tmp_path), "--report", str(report)]) == 0
    text = report.read_text()
    assert "| 256² | cpu | I/O alone (I/O bound) | 1 |" in text and "| peak RSS (MiB) |" in text
    assert "(`python -m benchmarks.polygons_bench`)](docs/benchmarks_polygons.md)" in text
    assert detect_bench._relative("docs/benchmarks_polygons.md", ROOT / "docs" / "benchmarks.md") == \
        "benchmarks_polygons.md"  # the committed report's own link, as a rerun of make bench writes it


def test_the_cuda_graphs_network_takes_another_networks_weights():
    """gpu_levers' CUDA graphs replay the network they captured; a later detection's network (built
    anew each run) has its weights copied into it. Here on the CPU, two networks prepared alike."""
    from benchmarks.compute import benchmark_bundle, inference_network
    from benchmarks.gpu_levers import load_weights

    bundle, _ = benchmark_bundle()
    captured, later = (inference_network(bundle, torch.device("cpu")) for _ in range(2))
    with torch.no_grad():
        for parameter in later.parameters():
            parameter.mul_(0.5)
    x = torch.randn(1, bundle.config.in_channels, 64, 64)
    with torch.inference_mode():
        expected = later(x, x).logit.clone()
        assert not torch.equal(captured(x, x).logit, expected)
    load_weights(captured, later)
    with torch.inference_mode():
        assert torch.equal(captured(x, x).logit, expected)
