"""Training faults: ``deepcl train`` killed with SIGKILL in the middle of an epoch continues with
``--resume`` from the last checkpoint without losing the finished epochs; a checkpoint (or model)
write that is interrupted, by an exception or by SIGKILL, never replaces the good file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepcl_core.model_file import load_model, save_model
from deepcl_core.training.checkpoint import load_checkpoint, save_checkpoint
from reliability.models import tiny_bundle

ROOT = Path(__file__).resolve().parents[2]
# One torch thread: on a shared, busy CPU more threads spin against each other (10× slower here).
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
PAIRS = ["test_102_0512_0000", "test_121_0768_0256", "train_36_0512_0512"]


def train_command(data: Path, out: Path, *extra: str) -> list:
    return [sys.executable, "-m", "deepcl_core", "train", *(str(data / "levir" / p) for p in PAIRS), "--out", str(out),
            "--encoder", "simple_cnn", "--epochs", "3", "--iterations-per-epoch", "6", "--batch", "2",
            "--crop", "32", "--val-fraction", "0", "--device", "cpu", "--seed", "1", *extra]


def test_sigkill_mid_epoch_then_resume(data_dir, tmp_path):
    out = tmp_path / "model.pt"
    process = subprocess.Popen(train_command(data_dir, out), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=ENV)
    try:
        for line in process.stderr:  # progress lines: kill as soon as the second epoch is under way
            if "epoch 2/3 step" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    saved = load_checkpoint(out.with_name(out.name + ".ckpt"))
    assert saved["epoch"] == 1
    first_epoch = saved["history"][0]
    resumed = subprocess.run(train_command(data_dir, out, "--resume"), capture_output=True, text=True, env=ENV,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    history = load_model(out).provenance["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert history[0] == first_epoch  # the finished epoch was kept, not redone


@pytest.mark.parametrize("save, load", [(save_checkpoint, load_checkpoint), (save_model, load_model)],
                         ids=["checkpoint", "model"])
def test_write_interrupted_by_an_exception_keeps_the_good_file(monkeypatch, tmp_path, save, load):
    path = tmp_path / "file.pt"
    good = {"epoch": 1} if save is save_checkpoint else tiny_bundle()
    save(good, path)
    original = path.read_bytes()

    def half_then_interrupt(obj, handle, *args, **kwargs):
        handle.write(original[: len(original) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save(good, path)
    assert path.read_bytes() == original and os.listdir(tmp_path) == ["file.pt"]
    monkeypatch.undo()
    assert load(path)


def test_write_killed_with_sigkill_keeps_the_good_checkpoint(tmp_path):
    path = tmp_path / "model.pt.ckpt"
    save_checkpoint({"epoch": 1}, path)
    original = path.read_bytes()
    # A child rewrites the checkpoint but stalls before the rename (in fsync); then it is killed.
    child = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from deepcl_core.training.checkpoint import save_checkpoint
        def stall(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = stall
        save_checkpoint({{"epoch": 2, "weights": list(range(100000))}}, Path({str(path)!r}))
    """)
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=30)
    assert path.read_bytes() == original and load_checkpoint(path)["epoch"] == 1
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert all(p.name.endswith(".partial") for p in leftovers)  # a killed process cannot clean up; never the checkpoint
