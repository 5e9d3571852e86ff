"""The network on batches of normalised tiles, as detection runs it: the images enlarged when the
model asks for it and padded to a multiple of the coarsest stride, copied to the device and the maps
brought back (or kept there), and a memory budget that lowers the batch, then the tile side, when the
device runs out of memory."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .confidence_calibration import PlattScaling
from .device import host_to_device, is_out_of_memory
from .errors import DeviceMemoryError
from .model.network import NETWORK_MULTIPLE
from .pending import Pending


def run_network(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
                with_distance: bool = True, scale: int = 1, platt_scaling: PlattScaling = PlattScaling(),
                inside: Optional[Sequence[Tuple[int, int]]] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Change probability and finest distance map (both (N, h, w) float32) for normalised
    (N, bands, h, w) inputs of any size: enlarged ``scale`` times (bilinear) when above 1, padded
    by reflection to a multiple of 32; the maps are cropped and averaged back to (h, w), and the
    network's score is then mapped by ``platt_scaling`` (as it was fitted: on the averaged score).
    ``inside``: each tile's (height, width) inside the image, for a last tile reaching past its edge:
    only that part is enlarged and padded (:func:`_network_input`); the maps past it are not
    meaningful.
    Tiles are scaled before they are blended, where the fit saw blended scores: where tiles overlap,
    a weighted mean of probabilities stands for the probability of a weighted mean of scores, which
    moves a few pixels across the threshold; scaling the blended rows instead would cost a pass
    over every output pixel on the host (ahead of each write, beside a GPU too)."""
    return launch_network(network, before, after, device, with_distance, scale, platt_scaling=platt_scaling,
                          inside=inside).result()


def launch_network(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
                   with_distance: bool = True, scale: int = 1, keep_on_device: bool = False,
                   platt_scaling: PlattScaling = PlattScaling(),
                   inside: Optional[Sequence[Tuple[int, int]]] = None) -> Pending:
    """:func:`run_network`, returning as soon as ``before`` and ``after`` may be reused: on CUDA once
    they are copied to the GPU (after the batches queued before them), while the GPU computes. The
    maps come as numpy arrays, on their way from the GPU; with ``keep_on_device`` as tensors on
    ``device``, for work that goes on there (:class:`~deepcl_core.device_blending.DeviceRowBlender`)."""
    height, width = before.shape[-2:]
    with torch.inference_mode():
        x1 = host_to_device(before, device)
        x2 = host_to_device(after, device)
        copied = _event_recorded(device)
        scaled_h, scaled_w = height * scale, width * scale
        x1, x2 = (_network_input(x, scale, inside) for x in (x1, x2))
        output = network(x1, x2)  # in mixed precision when it is a prepared (MixedPrecision) network
        probability = platt_scaling.scale_probability(
            _to_input_size(torch.sigmoid(output.logit.float())[:, :, :scaled_h, :scaled_w], height, width))
        distance = None
        if with_distance:
            full = F.interpolate(output.finest_distance.float(), size=x1.shape[-2:], mode="bilinear",
                                 align_corners=False)
            distance = _to_input_size(full[:, :, :scaled_h, :scaled_w], height, width)
        maps = Pending((probability, distance)) if keep_on_device else Pending.copied_to_host(probability, distance)
    if copied is not None:
        # torch's allocator keeps a page-locked block until its copies are done only for tensors it
        # handed out itself; the batch slots reach torch through numpy, so they are waited for.
        copied.synchronize()
    return maps


def _network_input(x: torch.Tensor, scale: int, inside: Optional[Sequence[Tuple[int, int]]]) -> torch.Tensor:
    """(N, bands, h, w) tiles enlarged ``scale`` times and padded by reflection to a multiple of 32
    (the edge repeated where a side is too short to reflect); a tile whose ``inside`` is smaller than
    (h, w) is enlarged and padded from that part alone, so that enlarging reads no pixel past the
    image's edge. The network then sees there what it sees at the edge of the whole image where a
    tile reaches less than 32 of its pixels past it: always at enlargements 1, 2 and 4 (the tile
    grid's step is 32, 16 and 8 image pixels); at 3, whose step is 32 image pixels, up to 64 more
    pixels of reflection than the whole image gets."""
    height, width = x.shape[-2:]
    if inside is not None and len(inside) != len(x):
        raise ValueError(f"inside gives {len(inside)} sizes for {len(x)} tiles")
    size = (-(-height * scale // NETWORK_MULTIPLE) * NETWORK_MULTIPLE,
            -(-width * scale // NETWORK_MULTIPLE) * NETWORK_MULTIPLE)
    tiles = _enlarged_and_padded(x, scale, size)
    reaching_past = [(i, h, w) for i, (h, w) in enumerate(inside or ()) if (h, w) != (height, width)]
    if reaching_past and tiles is x:
        tiles = tiles.clone()  # on the CPU ``x`` is the caller's array
    for i, h, w in reaching_past:
        tiles[i] = _enlarged_and_padded(x[i:i + 1, :, :h, :w], scale, size)[0]
    return tiles


def _enlarged_and_padded(x: torch.Tensor, scale: int, size: Tuple[int, int]) -> torch.Tensor:
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_h or pad_w:
        mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x


def _event_recorded(device: torch.device) -> Optional["torch.cuda.Event"]:
    """An event recorded now on ``device``'s current stream (None off CUDA)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event


def _to_input_size(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, h·s, w·s) maps to (N, h, w): each input pixel gets the mean of the s×s it became."""
    if maps.shape[-2:] != (height, width):
        maps = F.adaptive_avg_pool2d(maps, (height, width))
    return maps[:, 0]


class MemoryBudget:
    """How many tiles, and how large a piece of a tile, the network is given at once. When the
    device runs out of memory the batch is halved, then the tile side, and the run carries on;
    ``notify`` tells the user, and ``notes`` end up as warnings in the result."""

    def __init__(self, batch_size: int, tile_side: int, notify: Callable[[str], None]) -> None:
        self.batch_size = batch_size
        self.tile_side = tile_side
        self.notify = notify
        self.notes: List[str] = []

    def lower(self, device: torch.device) -> None:
        if self.batch_size > 1:
            self.batch_size //= 2
            note = f"the {device.type} device ran out of memory: batch lowered to {self.batch_size} tile(s)"
        elif self.tile_side > NETWORK_MULTIPLE:
            self.tile_side = max(NETWORK_MULTIPLE, self.tile_side // 2 // NETWORK_MULTIPLE * NETWORK_MULTIPLE)
            note = (f"the {device.type} device ran out of memory even for one tile: tiles are now computed in "
                    f"pieces of {self.tile_side}×{self.tile_side} pixels")
        else:
            raise DeviceMemoryError(f"the {device.type} device runs out of memory even for one "
                                    f"{NETWORK_MULTIPLE}×{NETWORK_MULTIPLE} piece of a tile; close other programs "
                                    "using it or run on the CPU (--device cpu)")
        self.notes.append(note)
        self.notify(note)


def run_within_memory(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
                       with_distance: bool, budget: MemoryBudget, scale: int, keep_on_device: bool,
                       platt_scaling: PlattScaling = PlattScaling(),
                       inside: Optional[Sequence[Tuple[int, int]]] = None) -> Pending:
    """:func:`run_network` (``inside`` as there) over (N, bands, h, w) in chunks the budget allows, lowering it and
    retrying the same chunk whenever the device runs out of memory. A batch in one chunk, as nearly
    always, is returned as launched (see :func:`launch_network`); several chunks, once computed,
    joined where they were asked for (on the device with ``keep_on_device``, else on the host)."""
    chunks: List[Pending] = []
    start = 0
    while start < len(before):
        size = budget.batch_size
        try:
            maps = _run_in_pieces(network, before[start:start + size], after[start:start + size], device,
                                  with_distance, budget.tile_side, scale, keep_on_device, platt_scaling,
                                  inside[start:start + size] if inside is not None else None)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            out_of_memory = True
        else:
            out_of_memory = False
        if out_of_memory:  # outside the except block, so the failed attempt's tensors are freed first
            if device.type == "cuda":
                torch.cuda.empty_cache()
            budget.lower(device)
            continue
        chunks.append(maps)
        start += size
    if len(chunks) == 1:
        return chunks[0]
    probabilities, distances = zip(*(chunk.result() for chunk in chunks))
    return Pending((_joined(probabilities, device, keep_on_device),
                    _joined(distances, device, keep_on_device) if with_distance else None))


def _joined(maps: Tuple[Union[np.ndarray, torch.Tensor], ...], device: torch.device,
            keep_on_device: bool) -> Union[np.ndarray, torch.Tensor]:
    """The chunks' maps as one, where they were asked for: numpy cannot take CUDA tensors, and
    chunks computed in pieces come back on the host."""
    if not keep_on_device:
        return np.concatenate(maps)
    return torch.cat([m if isinstance(m, torch.Tensor) else host_to_device(m, device) for m in maps])


def _run_in_pieces(network: torch.nn.Module, before: np.ndarray, after: np.ndarray, device: torch.device,
                   with_distance: bool, side: int, scale: int, keep_on_device: bool,
                   platt_scaling: PlattScaling, inside: Optional[Sequence[Tuple[int, int]]]) -> Pending:
    """:func:`launch_network` on the tiles whole, or computed on windows of at most ``side`` pixels
    of them (each cut to the part of its tile inside the image) and stitched together on the host:
    the fallback when one tile does not fit, whose windows, each padded on its own, give maps a
    little apart from the whole tile's."""
    height, width = before.shape[-2:]
    if side >= height and side >= width:
        return launch_network(network, before, after, device, with_distance, scale, keep_on_device=keep_on_device,
                              platt_scaling=platt_scaling, inside=inside)
    inside = inside or [(height, width)] * len(before)
    probability = np.zeros((len(before), height, width), np.float32)
    distance = np.zeros_like(probability) if with_distance else None
    for y in range(0, height, side):
        for x in range(0, width, side):
            window = (Ellipsis, slice(y, y + side), slice(x, x + side))
            # a window past a tile's edge keeps one pixel of it: its maps there are not meaningful
            cut = [(max(1, min(side, h - y)), max(1, min(side, w - x))) for h, w in inside]
            piece, piece_distance = run_network(network, before[window], after[window], device, with_distance,
                                                scale, platt_scaling, inside=cut)
            probability[window] = piece
            if distance is not None:
                distance[window] = piece_distance
    return Pending((probability, distance))
