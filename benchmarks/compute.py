"""The limits an end-to-end run is measured against: the network alone on tiles already in memory
(the compute bound), its FLOP count, and the machine's peak from a large matrix multiply."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepcl_core.confidence_calibration import PlattScaling
from deepcl_core.detect import DetectOptions
from deepcl_core.heap import freed_memory_kept
from deepcl_core.model.inference import (autocast_dtype, default_batch_size, inference_threads,
                                         prefers_channels_last, prepare_for_inference, torch_threads)
from deepcl_core.model_file import ModelBundle
from deepcl_core.network_on_tiles import run_network

from .pairs import PIXEL_SIZE_M

ROOT = Path(__file__).resolve().parents[1]


def benchmark_bundle(model_path: Optional[Path] = None) -> Tuple[ModelBundle, str]:
    """The bundled (or given) model, else MobileNetV2 DeepCL with the ImageNet encoder (speed and
    memory are the same; the change map means nothing). Returns (bundle, description)."""
    from deepcl_core.detect import bundled_model_path
    from deepcl_core.model import NetworkConfig, build_network
    from deepcl_core.model.pretrained import imagenet_weights_path, load_imagenet_weights
    from deepcl_core.model_file import load_model

    path = model_path or bundled_model_path()
    if path.is_file():
        return load_model(path), f"model file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    torch.manual_seed(0)
    config = NetworkConfig()
    network = build_network(config)
    if imagenet_weights_path().is_file():
        load_imagenet_weights(network.encoder)
        what = "MobileNetV2 DeepCL, ImageNet encoder, untrained decoder (no trained model bundled yet)"
    else:
        what = "MobileNetV2 DeepCL, random weights (no trained model, no ImageNet weights: run make setup)"
    return ModelBundle(config, network.state_dict(), trained=False), what


def benchmark_network(model_path: Optional[Path] = None) -> torch.nn.Module:
    return benchmark_bundle(model_path)[0].build()


def random_tiles(count: int, side: int, bands: int = 3, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised-looking inputs (N, bands, side, side): the network's cost does not depend on values."""
    rng = np.random.default_rng(seed)
    shape = (count, bands, side, side)
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


def network_seconds(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
                    batch: int, repeats: int = 1, platt_scaling: PlattScaling = PlattScaling()) -> float:
    """Best of ``repeats`` times to run ``network`` over the tiles in batches, after one warm-up
    batch; the same :func:`run_network` (padding, copies back, the confidence's scaling) as detection."""
    run_network(network, before[:batch], after[:batch], device, False, platt_scaling=platt_scaling)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(before), batch):
            run_network(network, before[start:start + batch], after[start:start + batch], device, False,
                        platt_scaling=platt_scaling)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def inference_network(bundle: ModelBundle, device: torch.device, precision: str = "auto") -> torch.nn.Module:
    """The network as detection runs it (same preparation as ``detect_changes``)."""
    return prepare_for_inference(bundle.build(), device, channels_last=prefers_channels_last(device),
                                 precision=precision, copy=False)


def compute_bound(bundle: ModelBundle, before: np.ndarray, after: np.ndarray, device: torch.device,
                  options: DetectOptions, repeats: int = 2) -> float:
    """Seconds per tile of the network alone on real tiles in memory, same batch and precision, and
    the scaling detection gives the benchmark pairs' confidence."""
    network = inference_network(bundle, device, options.precision)
    with torch_threads(inference_threads(device)), freed_memory_kept():  # as detection runs it
        batch = options.batch_size or default_batch_size(device)
        return network_seconds(network, before, after, device, batch, repeats,
                               bundle.platt_scaling_for(PIXEL_SIZE_M)) / len(before)


def flops_per_tile(bundle: ModelBundle, side: int, bands: int, height: Optional[int] = None) -> float:
    """Floating-point operations (a multiply-add counts 2) of one pair of tiles ``side`` wide and
    ``height`` (default ``side``) high, counted by ``torch.utils.flop_counter`` on the unfolded
    network (folding changes no conv's size)."""
    network = bundle.build()
    x = torch.zeros(1, bands, height or side, side)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(x, x)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, precision: str = "auto", size: int = 4096,
                repeats: int = 3) -> Tuple[float, str]:
    """GFLOP/s of a large square matrix multiply on ``device`` with the threads and in the type
    detection uses for ``precision`` (fp32, or its autocast type). Returns (GFLOP/s, what)."""
    dtype = autocast_dtype(device, precision) or torch.float32
    with torch_threads(inference_threads(device)):
        return _matmul_peak(device, dtype, size, repeats)


def _matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> Tuple[float, str]:
    size = 8192 if device.type == "cuda" else size
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9, f"{size}² {str(dtype).replace('torch.', '')} matmul"


def sample_tiles(before: Path, after: Path, bundle: ModelBundle, options: DetectOptions,
                 count: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """``count`` real tiles of the pair, spread over the image, read and normalised as detection
    does, in memory: (before, after) (count, bands, h, w) and the image's tile count."""
    from deepcl_core.band_choice import choose_bands
    from deepcl_core.grid import align_after_to_before
    from deepcl_core.normalization import normalize
    from deepcl_core.pair_statistics import read_pair_sample
    from deepcl_core.raster_io import open_image, read_window
    from deepcl_core.tiling import TileGrid

    before_ds, after_ds = open_image(before, "before"), open_image(after, "after")
    aligned = align_after_to_before(before_ds, after_ds)
    bands_b = choose_bands(before_ds, None, bundle.bands, "before")
    bands_a = choose_bands(after_ds, None, bundle.bands, "after")
    stretch_b, stretch_a = read_pair_sample(before_ds, bands_b, aligned, bands_a).stretches(bundle.normalization)
    grid = TileGrid.for_network(before_ds.RasterXSize, before_ds.RasterYSize, options.tile_size, options.overlap_used)
    positions = list(grid.positions())
    chosen = positions[::max(1, len(positions) // count)][:count]
    pairs = []
    for x, y in chosen:
        pixels_b, _ = read_window(before_ds, bands_b, x, y, grid.tile_width, grid.tile_height, "before")
        pixels_a, _ = read_window(aligned, bands_a, x, y, grid.tile_width, grid.tile_height, "after")
        pairs.append((normalize(pixels_b, stretch_b, bundle.normalization),
                      normalize(pixels_a, stretch_a, bundle.normalization)))
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), len(grid)
