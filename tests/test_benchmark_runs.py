"""Every kind of `make bench` run works on a small generated pair (the figures themselves belong to
the benchmark, not to tests): a run that breaks would otherwise be found only by the next
benchmark, minutes into it."""
from __future__ import annotations

import json

import pytest

from benchmarks.runs import RUNS, child


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
