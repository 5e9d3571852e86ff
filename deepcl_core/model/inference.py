"""A copy of a trained network made ready for inference: batch norms folded into the convolutions
before them, and the memory layout the device computes fastest. The trained network itself is
left untouched, so training and saving never see the folded weights."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from copy import deepcopy
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` in an ``nn.Sequential`` into one
    convolution (in place, for eval mode only; the batch norm becomes an ``Identity``). In eval
    mode a batch norm is an affine map per channel, so the result is the same up to rounding and
    one pass over the activations is saved per layer. Returns how many were folded."""
    folded = 0
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        layers = list(child)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and norm.track_running_stats and norm.running_mean is not None):
                # In place on the conv (the caller's copy): fuse_conv_bn_eval would copy each conv again.
                conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                                              norm.running_var, norm.eps, norm.weight, norm.bias)
                child[i + 1] = nn.Identity()
                folded += 1
    return folded


PRECISIONS = ("auto", "fp32", "bf16")


def prepare_for_inference(network: nn.Module, device: torch.device, fold: bool = True,
                          channels_last: bool = False, precision: str = "auto", copy: bool = True) -> nn.Module:
    """An eval-mode copy of ``network`` on ``device`` with batch norms folded (``fold``), weights
    in NHWC layout with ``channels_last`` (what cuDNN's tensor cores prefer), run in the mixed
    precision :func:`autocast_dtype` chooses for ``precision``. ``copy=False`` prepares ``network``
    itself, for a network built for this run that nothing else holds (a copy is start-up time lost)."""
    ready = (deepcopy(network) if copy else network).eval()
    for parameter in ready.parameters():
        parameter.requires_grad_(False)
    if fold:
        fold_batch_norms(ready)
    ready = ready.to(device)
    if channels_last:
        ready = ready.to(memory_format=torch.channels_last)
    return MixedPrecision(ready, device, autocast_dtype(device, precision))


class MixedPrecision(nn.Module):
    """``network`` run under autocast to ``dtype``, or in fp32 when ``dtype`` is None. Callers
    take ``.float()`` of what they keep."""

    def __init__(self, network: nn.Module, device: torch.device, dtype: Optional[torch.dtype]) -> None:
        super().__init__()
        self.network = network
        self.device_type = device.type
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor):
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.network(*inputs)


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast type for ``precision``: "auto" is fp16 on CUDA (tensor cores) and fp32 elsewhere;
    "fp32" is fp32 everywhere; "bf16" is bf16 everywhere, an opt-in for CPUs with bf16 instructions
    (AMX, AVX512-BF16). On the 2-core Intel Xeon development machine, at 8,192², the network alone
    took 20.3 s instead of 39.3 s and a whole detection 32.1 s instead of 44.8 s (docs/benchmarks_bf16.md
    against docs/benchmarks.md as committed in 6eba60c); docs/levers.md has the network alone 1.61× as
    fast (3.877 against 2.405 output megapixels/s). With bf16's 8-bit mantissa it changes the class of
    about 0.9 % of the held-out pairs' pixels (0.877 %, the calibrated confidence moved by up to 0.74;
    ``python -m benchmarks.precision --precision bf16`` on the model card's held-out pairs), too much
    to be a silent default."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return None


def precision_name(dtype: Optional[torch.dtype]) -> str:
    return {None: "fp32", torch.float16: "fp16 mixed", torch.bfloat16: "bf16 mixed"}.get(dtype, str(dtype))


def default_batch_size(device: torch.device) -> int:
    """Tiles per network call: one on the CPU, where a single tile's activations stay in cache
    (docs/levers.md); eight on CUDA, where 768² tiles need that many per call to fill the GPU
    (docs/benchmarks_gpu.md); four elsewhere (MPS: unmeasured)."""
    return {"cpu": 1, "cuda": 8}.get(device.type, 4)


def prefers_channels_last(device: torch.device) -> bool:
    """NHWC: what cuDNN's tensor cores want under mixed precision, and on the CPU oneDNN runs the
    depthwise convolutions of MobileNetV2 about 1.4× faster in it (docs/levers.md)."""
    return device.type in ("cpu", "cuda")


# Cores kept from torch on the CPU, for reader and writer threads working beside the network
# (overlap_io=True; by default they take turns with it there, see overlaps_io). None: on a quiet
# machine a reserved core costs the network more than the threads beside it gain; it only won
# while other processes competed for the cores (`python -m benchmarks.pipeline_levers`).
IO_RESERVED_CORES = 0


def inference_threads(device: torch.device) -> Optional[int]:
    """torch threads for detection on the CPU: all available cores but :data:`IO_RESERVED_CORES`
    (never more than torch would use anyway). An OpenMP team stalls at every barrier while one of
    its threads waits for a core that another thread holds; on the 2-core development machine one
    torch thread ran the pipeline end to end 2.6× faster than two while the CPU was shared with
    other work, but 1.6× slower on a quiet machine, so none is reserved by default. None: leave
    torch's setting."""
    if device.type != "cpu":
        return None
    return max(1, min(_threads_without_requests(), available_cores() - IO_RESERVED_CORES))


def overlaps_io(device: torch.device) -> bool:
    """Whether detection reads and writes in background threads while the network runs (beside an
    accelerator) or in turn with it, each turn spread over the cores (on the CPU: the before and
    after images read in two threads, output blocks compressed in one per core). On the CPU a
    reader or writer thread beside the network takes a core from one of torch's threads, and the
    rest of the team spins at the next barrier until it is back. On 2 cores, in turn against beside:
    1.96 against 2.15 s at 2,048², 30.1 against 32.2 s at 8,192² (``python -m
    benchmarks.pipeline_levers``, median of 3)."""
    return device.type != "cpu"


# Each reader thread holds tiles in flight (14 MB per pair of 768² tiles) and GDAL handles. Beside an
# H100 with 16 cores, blending on the GPU, 8 threads ran 8,192² detection faster than 4 on three
# hosts (1.14 against 1.25 s, 1.49 against 1.68, 1.44 against 1.57) and faster than 16; at 2,048²
# the count made no clear difference (a later run in the process, `python -m benchmarks.gpu_levers`,
# docs/benchmarks_gpu_e2e.md).
MAX_IO_THREADS_BESIDE_ACCELERATOR = 8
MAX_IO_THREADS = 16  # compressing in turn with the network on the CPU: every core helps


def io_threads(beside_accelerator: bool) -> int:
    """Threads that read and normalise tiles, and that compress output blocks: every core, up to
    :data:`MAX_IO_THREADS_BESIDE_ACCELERATOR` when they work while an accelerator computes
    (decoding, normalising and compressing on one core would hold it back), up to
    :data:`MAX_IO_THREADS` when they work between the network's turns on the CPU
    (:func:`overlaps_io`)."""
    return min(available_cores(), MAX_IO_THREADS_BESIDE_ACCELERATOR if beside_accelerator else MAX_IO_THREADS)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# torch's thread count (OpenMP's) is each thread's own, and a thread takes, at its first use of
# torch, the last one set. Two runs at once (QGIS runs detections side by side, each in a task's thread) each ask for
# a count; when a block ends, its thread gets the count of its own latest block still running, or the
# host's: another run's count is not its own (a task's thread was left on the
# one thread of another run's preparation, and every later detection there computed on one core).
_THREAD_REQUESTS: List[Tuple[object, int, int]] = []  # (token, count, thread)
# Before the first open block of any thread; a thread's blocks end on it, as it cannot change while one
# is open (also for a thread started during another run's block, which took that run's count)
_HOST_THREAD_COUNT = [0]
_THREAD_REQUESTS_LOCK = threading.Lock()


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` torch threads (None: unchanged). When it ends, the thread's count
    is that of its latest block still running, or, when none is, the host's (:data:`_HOST_THREAD_COUNT`)."""
    if not count:
        yield
        return
    token, thread = object(), threading.get_ident()
    with _THREAD_REQUESTS_LOCK:
        if not _THREAD_REQUESTS:
            _HOST_THREAD_COUNT[0] = torch.get_num_threads()
        _set_torch_threads(count)
        _THREAD_REQUESTS.append((token, count, thread))
    try:
        yield
    finally:
        with _THREAD_REQUESTS_LOCK:
            _THREAD_REQUESTS[:] = [request for request in _THREAD_REQUESTS if request[0] is not token]
            own = [request[1] for request in _THREAD_REQUESTS if request[2] == thread]
            _set_torch_threads(own[-1] if own else _HOST_THREAD_COUNT[0])


def _threads_without_requests() -> int:
    """torch's thread count as the host left it: while another run holds a block (one thread while
    it prepares), a thread started then takes that run's count, and a run there kept it throughout."""
    with _THREAD_REQUESTS_LOCK:
        return _HOST_THREAD_COUNT[0] if _THREAD_REQUESTS else torch.get_num_threads()


def _set_torch_threads(count: int) -> None:
    """Only a change: the other run's network may be computing on the threads meanwhile."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
