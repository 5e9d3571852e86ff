"""Every kind of `make bench` run works on a small generated pair (the figures themselves belong to
the benchmark, not to tests): a run that breaks would otherwise be found only by the next
benchmark, minutes into it."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from benchmarks.detect_bench import median_record, table
from benchmarks.runs import RUNS, child


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
    repeats = [{"seconds": 2.5, "peak_rss_mb": 600, "tiles": 9}, {"seconds": 2.1, "peak_rss_mb": 640, "tiles": 9},
               {"seconds": 2.2, "peak_rss_mb": 610, "tiles": 9}]
    row = median_record(repeats)
    assert row["seconds"] == 2.2 and row["seconds_range"] == (2.1, 2.5) and row["peak_rss_mb"] == 640
    assert table([dict(row, size=2048, device="cpu", run="compute", megapixels_per_s=1.9)]).endswith(
        "| 2,048² | cpu | network alone (compute bound) | 9 | 2.2 (2.1-2.5) | 1.900 | – | – | – | 640 |")
    alike = median_record([dict(r, seconds=2.21 + i / 1000) for i, r in enumerate(repeats)])
    assert "| 2.2 |" in table([dict(alike, size=2048, device="cpu", run="compute", megapixels_per_s=1.9)])


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
