"""Training faults: ``deepcl train`` killed with SIGKILL in the middle of an epoch continues with
``--resume`` from the last checkpoint without losing the finished epochs; the device running out of
memory ends the run with advice, and a resumed run with smaller steps goes on; a checkpoint (or
model) write that is interrupted, by an exception or by SIGKILL, never replaces the good file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepcl_core.errors import DeviceMemoryError
from deepcl_core.model import DeepCLNet
from deepcl_core.model_file import load_model, save_model
from deepcl_core.training import TrainOptions, train
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


def out_of_memory_when(monkeypatch, fails) -> None:
    """The real network, failing as a full GPU does (torch's message) on the forward passes for
    which ``fails(network, batch_size)`` holds."""
    forward = DeepCLNet.forward

    def forward_or_fail(network, before, after):
        if fails(network, before.shape[0]):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total "
                                              "capacity of 3.81 GiB of which 20.06 MiB is free. If reserved but "
                                              "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF")
        return forward(network, before, after)
    monkeypatch.setattr(DeepCLNet, "forward", forward_or_fail)


def small_training(data: Path, out: Path, **changes) -> TrainOptions:
    return TrainOptions(**{**dict(data_dirs=[data / "levir" / p for p in PAIRS[:2]],
                                  val_dirs=[data / "levir" / PAIRS[2]], out=out, epochs=2, iterations_per_epoch=3,
                                  batch_size=4, crop=32, encoder="simple_cnn", device="cpu", seed=1), **changes})


def test_out_of_memory_in_a_training_step_is_explained_and_smaller_steps_resume(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    steps = []  # training forward passes so far: the second epoch's first one fails, batches over 2 crops

    def second_epoch_with_large_batches(network, batch):
        if network.training:
            steps.append(batch)
        return network.training and len(steps) > 3 and batch > 2
    out_of_memory_when(monkeypatch, second_epoch_with_large_batches)
    with pytest.raises(DeviceMemoryError) as caught:
        train(small_training(data_dir, out))
    assert str(caught.value) == (
        "the cpu device ran out of memory while training (epoch 2) (CUDA out of memory. Tried to allocate 512.00 "
        "MiB); lower the batch (--batch, now 4) or the crop (--crop, now 32), or train on the CPU (--device cpu); "
        "the checkpoint of epoch 1 is kept (continue with --resume)")
    assert not out.exists() and load_checkpoint(out.with_name(out.name + ".ckpt"))["epoch"] == 1

    resumed = train(small_training(data_dir, out, batch_size=2, resume=True))
    assert [entry["epoch"] for entry in resumed.history] == [1, 2] and load_model(out).trained


def test_out_of_memory_in_validation_is_explained(data_dir, tmp_path, monkeypatch):
    out_of_memory_when(monkeypatch, lambda network, batch: not network.training)
    with pytest.raises(DeviceMemoryError) as caught:
        train(small_training(data_dir, tmp_path / "model.pt", epochs=1))
    assert str(caught.value) == ("the cpu device ran out of memory while validating (epoch 1) (CUDA out of memory. "
                                 "Tried to allocate 512.00 MiB); close other programs using the GPU, or train on the "
                                 "CPU (--device cpu); no epoch had finished")


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
