"""The model file: one ``torch.save`` dict, readable with ``weights_only=True`` (no code runs on
load). It carries the network's config and weights and the input contract: bands, normalisation,
threshold, and the provenance of the weights."""
from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from .confidence_calibration import PlattScaling
from .errors import ModelFileError
from .model import DeepCLNet, NetworkConfig, build_network
from .normalization import NormalizationSpec
from .outputs import write_atomically

FORMAT_NAME = "deepcl-model"
FORMAT_VERSION = 2  # 2: thresholds apply to the Platt-scaled confidence; 1 files have no scaling
ARCHITECTURE = "deepcl"
_REQUIRED_KEYS = ("format", "format_version", "architecture", "config", "state_dict", "bands",
                  "normalization", "threshold")


@dataclass
class ModelBundle:
    """A network and its input contract, as loaded from or written to a model file."""

    config: NetworkConfig
    state_dict: Dict[str, torch.Tensor]
    bands: Tuple[str, ...] = ("red", "green", "blue")  # names of the expected input bands, in order
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    threshold: float = 0.5
    # (smallest ground pixel size in metres, threshold) pairs, ascending: the network's confidence
    # on coarse imagery sits lower than on aerial imagery, so such images get their own threshold.
    thresholds_by_pixel_size: Tuple[Tuple[float, float], ...] = ()
    # (smallest ground pixel size in metres, factor) pairs, ascending: coarse images are enlarged by
    # the factor before the network (and its maps shrunk back), so that small objects of 10 m
    # imagery cover as many network pixels as the ones it learned from aerial imagery.
    input_scales_by_pixel_size: Tuple[Tuple[float, int], ...] = ()
    # The network's logit made a probability (the confidence layer), for images of no coarser class
    # and then for each class of thresholds_by_pixel_size; the thresholds apply to the scaled
    # confidence. A threshold class without a scaling (format 1 files) keeps the network's score.
    platt_scaling: PlattScaling = field(default_factory=PlattScaling)
    platt_scalings_by_pixel_size: Tuple[Tuple[float, PlattScaling], ...] = ()
    provenance: Dict[str, Any] = field(default_factory=dict)  # training data, command, metrics, …
    trained: bool = True  # False only for test fixtures; detection warns about untrained weights
    # The version of the file it was read from (None: not read), for `deepcl info`; saving writes FORMAT_VERSION
    # (a format 1 file's threshold classes without a scaling keep the network's score either way).
    read_format_version: Optional[int] = field(default=None, compare=False)

    def build(self) -> DeepCLNet:
        """The network with the file's weights, in float32 whatever torch's default dtype. Built
        without initialising the weights the file replaces (random initialisation drew from the host
        program's torch random stream at every detection), and given copies of them, which folding
        the batch norms may change (``to_empty`` instead took a good part of a second at its first
        call in a process)."""
        with torch.device("meta"):
            network = build_network(self.config)
        network.load_state_dict({name: value.clone() for name, value in self.state_dict.items()}, assign=True)
        return network.float().eval()

    def threshold_for(self, pixel_size_m: Optional[float]) -> float:
        """The decision threshold for images of ``pixel_size_m`` metres per pixel (None: unknown,
        e.g. no georeference), which get :attr:`threshold` unless a coarser class covers them."""
        return _by_pixel_size(self.thresholds_by_pixel_size, pixel_size_m, self.threshold)

    def input_scale_for(self, pixel_size_m: Optional[float]) -> int:
        """How many times larger images of ``pixel_size_m`` metres per pixel are given to the
        network (1 unless a coarser class covers them)."""
        return _by_pixel_size(self.input_scales_by_pixel_size, pixel_size_m, 1)

    def platt_scaling_for(self, pixel_size_m: Optional[float]) -> PlattScaling:
        """The scaling that makes the network's score on images of ``pixel_size_m`` a probability:
        that of the threshold class covering them, none (the network's score, which such a class's
        threshold was chosen on) when that class has no scaling of its own, else :attr:`platt_scaling`."""
        covering = [size for size, _ in self.thresholds_by_pixel_size
                    if pixel_size_m is not None and pixel_size_m >= size]
        if not covering:
            return self.platt_scaling
        return dict(self.platt_scalings_by_pixel_size).get(max(covering), PlattScaling())

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
            "config": self.config.to_dict(), "state_dict": self.state_dict, "bands": list(self.bands),
            "normalization": self.normalization.to_dict(), "threshold": float(self.threshold),
            "thresholds_by_pixel_size": [[float(size), float(t)] for size, t in self.thresholds_by_pixel_size],
            "input_scales_by_pixel_size": [[float(size), int(k)] for size, k in self.input_scales_by_pixel_size],
            "platt_scaling": self.platt_scaling.to_list(),
            "platt_scalings_by_pixel_size": [[float(size), *scaling.to_list()]
                                             for size, scaling in self.platt_scalings_by_pixel_size],
            "provenance": plain(self.provenance), "trained": self.trained,
        }

    def describe(self) -> Dict[str, Any]:
        """Everything but the weights, for ``deepcl info``."""
        info = {k: v for k, v in self.to_dict().items() if k != "state_dict"}
        info["format_version"] = self.read_format_version or FORMAT_VERSION
        info["parameters"] = int(sum(t.numel() for k, t in self.state_dict.items()
                                     if t.is_floating_point() and "running_" not in k))
        return info


def _by_pixel_size(classes: Tuple[Tuple[float, Any], ...], pixel_size_m: Optional[float], default: Any) -> Any:
    """The value of the coarsest class, of ascending (smallest pixel size, value) ``classes``, that
    covers ``pixel_size_m``; ``default`` when none does or the size is unknown."""
    chosen = default
    for smallest, value in classes:
        if pixel_size_m is not None and pixel_size_m >= smallest:
            chosen = value
    return chosen


def plain(value: Any) -> Any:
    """Only types that ``torch.load(weights_only=True)`` accepts: str subclasses such as torch's
    version string, numpy scalars and paths become their plain counterparts. ``save_model``
    applies it to provenance, so a stray object can never make a saved file unloadable."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def save_model(bundle: ModelBundle, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-write never replaces a good file with a broken one."""
    atomic_torch_save(bundle.to_dict(), Path(path))


def atomic_torch_save(data: Dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` by :func:`~deepcl_core.outputs.write_atomically` (with the umask's
    permissions: a model trained on a server is for its team to read)."""
    write_atomically(path, lambda handle: torch.save(data, handle))


def load_model(path: str | os.PathLike) -> ModelBundle:
    """Read and check a model file; any problem is a :class:`ModelFileError` that says what to do."""
    path = Path(path)
    return _model_from_bytes(_model_file_bytes(path), path)


def load_model_and_sha256(path: str | os.PathLike) -> Tuple[ModelBundle, str]:
    """:func:`load_model`'s bundle and the SHA-256 of the bytes it was read from (a fine-tune records
    which file it started from): one read, and the digest is of the very version loaded."""
    path = Path(path)
    data = _model_file_bytes(path)
    return _model_from_bytes(data, path), hashlib.sha256(data).hexdigest()


def _model_file_bytes(path: Path) -> bytes:
    """The whole file, read once: the checksum check and torch's reader both take it from memory.
    A file that is no PyTorch archive is refused on its first bytes, before the rest is read."""
    if path.is_dir():
        raise ModelFileError(f"model file {path} is a folder; give the .pt file inside it")
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file is empty: {path}")
    with path.open("rb", buffering=0) as handle:  # readall: the whole file in one read, not through a buffer
        start = handle.read(4)
        if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # a pickle: old torch.save
            raise ModelFileError(f"{path} is a PyTorch file of the old format, not a DeepCL model file (network "
                                 "weights alone, such as the ImageNet encoder's?): give a model file deepcl train "
                                 "wrote")
        if start != b"PK\x03\x04":  # torch.save writes a zip archive
            raise ModelFileError(f"{path} is not a readable DeepCL model file: it is of another "
                                 "format (a model file is a PyTorch archive, .pt)")
        handle.seek(0)
        return handle.readall()


def _model_from_bytes(data: bytes, path: Path) -> ModelBundle:
    """The checked bundle of a model file's bytes ``data``, read from ``path`` (which errors name)."""
    part = damaged_part(data)
    if part is not None:
        raise ModelFileError(f"{path} is damaged: its part {part} does not match its checksum; "
                             "copy or download it again")
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a safe model file
        raise ModelFileError(f"{path} is not a readable DeepCL model file (corrupt, truncated, of another format, "
                             f"or holding code, which is never run): {_first_sentence(exc)}") from None
    return _bundle_from_dict(loaded, path)


def damaged_part(archive: bytes) -> Optional[str]:
    """The name of the first part of the zip archive ``torch.save`` wrote (its bytes) whose bytes do
    not match their checksum, else None. Torch's reader checks no checksum: damaged
    bytes inside a tensor loaded as other weights, which detected other changes without a word. None
    too for a file that is no readable zip at all (truncated, another format), which torch's reader
    then names."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as opened:
            return opened.testzip()  # reads every part
    except Exception:  # noqa: BLE001 - zipfile's many errors: left for torch's reader to name
        return None


def shared_model(path: str | os.PathLike) -> ModelBundle:
    """:func:`load_model`'s bundle, read once per version of the file and shared: QGIS checks a
    model when parameters change and then detects with it, and a session or a server detects many
    times. A file replaced or rewritten is read again. The bundle, its weights and its provenance
    are shared with every other caller: do not modify them; :func:`load_model` gives a bundle of
    one's own. Errors name the file as resolved (the one read, behind any link)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return load_model(path)  # which says what is wrong
    return _shared_model(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)  # a few models of ~10 MB; failures are not kept, so a mended file is read again
def _shared_model(path: str, inode: int, size: int, modified_ns: int) -> ModelBundle:
    return load_model(path)


def _weights_misfit(network: DeepCLNet, given: Any) -> Optional[str]:
    """How the weights ``given`` do not fit ``network``, in one line (torch's own error spans lines
    and lists every key), else None. ``network`` is built on the meta device and takes them by
    reference, so nothing is computed or copied (QGIS asks in its main thread, which a computation
    there would hold up, beside a run's network)."""
    if not isinstance(given, dict) or not all(isinstance(t, torch.Tensor) for t in given.values()):
        return "they are not a set of named tensors"
    try:
        network.load_state_dict(given, assign=True)
        return None
    except Exception as exc:  # summed up below; a tensor of another shape is left unassigned, as it was
        error = exc
    expected = network.state_dict()
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    reshaped = [f"{key} is {_shape(given[key])} where the network has {_shape(expected[key])}"
                for key in expected if key in given and given[key].shape != expected[key].shape]
    problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
                ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
    return f"of the network's {len(expected)} tensors, " + ", ".join(problems) if problems else _first_sentence(error)


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(str(size) for size in tensor.shape) or "a single number"


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every value of the floating-point ``tensors`` is a number (not NaN, not infinite):
    training checks its weights after every step, loading a model file's. On the CPU by numpy, on the
    tensors' own memory: its reductions are single-threaded, where each of torch's waits on its
    thread pool and one over all of them first copies them. Elsewhere one reduction over all of
    them: each of many would wait on the device."""
    floating = [t.detach() for t in tensors if t.is_floating_point()]
    if all(t.device.type == "cpu" and t.dtype != torch.bfloat16 for t in floating):  # numpy lacks bfloat16
        return all(bool(np.isfinite(t.numpy()).all()) for t in floating)
    return bool(torch.isfinite(torch.cat([t.reshape(-1) for t in floating])).all())


def _non_finite_weights(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Which weights hold NaN or infinite values, else None."""
    if all_finite(state_dict.values()):  # the usual case; the tensors are named only when some are not
        return None
    floating = [(key, t) for key, t in state_dict.items() if t.is_floating_point()]
    counts = [(key, count) for key, count in ((key, int((~torch.isfinite(t)).sum())) for key, t in floating)
              if count]
    key, count = counts[0]
    return (f"non-finite weights (NaN or infinite) in {len(counts)} of {len(floating)} tensors, e.g. {key} "
            f"({count} of its {state_dict[key].numel()} values): it cannot detect; a training that diverged "
            "writes such weights")


def _band_names(bands: Any) -> Tuple[str, ...]:
    """The model's band names; anything but a list of names (numbers, one text such as "rgb", which
    read as the bands r, g, b) is a damaged file: detection and Processing failed on it with errors
    of their own."""
    if not isinstance(bands, (list, tuple)) or not all(isinstance(name, str) and name.strip() for name in bands):
        raise ValueError(f"the input bands must be a list of band names, like ['red', 'green', 'blue'], not {bands!r}")
    return tuple(bands)


def _normalization_problem(spec: NormalizationSpec) -> Optional[str]:
    """What makes a normalisation unusable, else None: it divides by std (0: infinite inputs; below
    0: inverted), and a mean of no value or not finite makes every input NaN, which detection
    wrote as "no change"."""
    low, high = spec.low_percentile, spec.high_percentile
    if not 0.0 <= low < high <= 100.0:  # NaN fails too
        return f"percentiles {low:g} and {high:g} (they must lie from 0 to 100, the low one under the high one)"
    # Fewer values than bands are extended and more are cut (normalization.per_band): training writes
    # ImageNet's 3 for any band count, so only an empty list is of a wrong length.
    if not spec.mean or not all(math.isfinite(value) for value in spec.mean):
        return f"a mean of {list(spec.mean)} (one finite number per band, or one for all)"
    if not spec.std or not all(0.0 < value < math.inf for value in spec.std):
        return f"a standard deviation of {list(spec.std)} (one finite number above 0 per band, or one for all)"
    return None


def _two_numbers(values: Any) -> Tuple[float, float]:
    """A scaling's slope and intercept as stored; anything else is a damaged file."""
    values = [float(v) for v in values]
    if len(values) != 2:
        raise ValueError(f"a confidence scaling is a slope and an intercept, not {values}")
    return values[0], values[1]


def _first_sentence(exc: Exception, limit: int = 200) -> str:
    """An error's first sentence: torch's go on with advice in its own words, which a cut at a
    fixed length left mid-sentence ("… your checkpoint file is")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[:limit - 1] + "…"


def _bundle_from_dict(data: Any, path: Path) -> ModelBundle:
    from .training.checkpoint import FORMAT_NAME as CHECKPOINT_FORMAT, model_path_for  # training imports this module

    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        written = model_path_for(path)
        model = written.name if written is not None else "its --out"
        if written is not None and written.is_file():  # a finished run: its model is the file to give
            earlier = written.stat().st_mtime_ns < path.stat().st_mtime_ns
            raise ModelFileError(f"{path} is a training checkpoint, not a model file: give the model file its "
                                 f"training wrote beside it, {written}" + (
                                     " (written before the checkpoint's last epoch: a later run continued it; "
                                     "finish that run with --resume for a model of all its epochs)" if earlier
                                     else ""))
        epochs = data.get("epoch")
        # The model file is written only when training ends: an interrupted run has none beside its checkpoint
        raise ModelFileError(f"{path} is a training checkpoint, not a model file: training writes the model "
                             f"({model}) when its last epoch ends; continue it with --resume"
                             + (f", or write the model of the {epochs} epoch(s) it holds with the same train "
                                f"command and --resume --epochs {epochs}" if isinstance(epochs, int) else ""))
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a DeepCL model file (no '{FORMAT_NAME}' format tag)")
    missing: List[str] = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ModelFileError(f"{path} lacks {', '.join(missing)}; it is damaged or was not written by DeepCL")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:  # True is an int
        raise ModelFileError(f"{path} has model format version {version!r}, which no DeepCL writes; it is damaged")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} has model format version {version}; this DeepCL reads up to "
                             f"{FORMAT_VERSION}: update the plugin")
    if data["architecture"] != ARCHITECTURE:
        raise ModelFileError(f"{path} holds architecture {data['architecture']!r}, not {ARCHITECTURE!r}")
    try:
        bundle = ModelBundle(
            config=NetworkConfig.from_dict(data["config"]), state_dict=data["state_dict"],
            bands=_band_names(data["bands"]), normalization=NormalizationSpec.from_dict(data["normalization"]),
            threshold=float(data["threshold"]),
            thresholds_by_pixel_size=tuple(sorted((float(size), float(t))
                                                  for size, t in data.get("thresholds_by_pixel_size") or ())),
            input_scales_by_pixel_size=tuple(sorted((float(size), int(k))
                                                    for size, k in data.get("input_scales_by_pixel_size") or ())),
            platt_scaling=PlattScaling(*_two_numbers(data.get("platt_scaling") or (1.0, 0.0))),
            platt_scalings_by_pixel_size=tuple(sorted(
                ((float(size), PlattScaling(*_two_numbers(scaling)))
                 for size, *scaling in data.get("platt_scalings_by_pixel_size") or ()), key=lambda item: item[0])),
            provenance=dict(data.get("provenance") or {}),
            trained=bool(data.get("trained", True)), read_format_version=version)
    except Exception as exc:
        raise ModelFileError(f"{path} has a damaged network configuration or input contract (bands, normalisation, "
                             f"thresholds, scalings): {_first_sentence(exc)}") from None
    try:
        with torch.device("meta"):
            network = build_network(bundle.config)
    except Exception as exc:  # an unknown encoder, channels that are no sizes …
        raise ModelFileError(f"{path} has a network configuration this DeepCL cannot build ({_first_sentence(exc)}); "
                             "it is damaged or was not written by DeepCL") from None
    misfit = _weights_misfit(network, bundle.state_dict)
    if misfit:
        raise ModelFileError(f"{path} has weights that do not fit its configuration: {misfit}; it is damaged "
                             "or was not written by DeepCL")
    non_finite = _non_finite_weights(bundle.state_dict)
    if non_finite:
        raise ModelFileError(f"{path} holds {non_finite}")
    normalization_problem = _normalization_problem(bundle.normalization)
    if normalization_problem:
        raise ModelFileError(f"{path} has a normalisation that cannot work: {normalization_problem}; it is damaged "
                             "or was not written by DeepCL")
    unmatched = ({size for size, _ in bundle.platt_scalings_by_pixel_size}
                 - {size for size, _ in bundle.thresholds_by_pixel_size})
    if unmatched:
        raise ModelFileError(f"{path} has a confidence scaling for pixels of {min(unmatched):g} m or coarser but no "
                             "threshold for them; it is damaged or was not written by DeepCL")
    scalings = (bundle.platt_scaling, *(scaling for _, scaling in bundle.platt_scalings_by_pixel_size))
    if not all(0 < s.slope < math.inf and math.isfinite(s.intercept) for s in scalings):
        raise ModelFileError(f"{path} has a confidence scaling that is not a finite positive slope and "
                             f"finite intercept: {[s.to_list() for s in scalings]}")
    thresholds = (bundle.threshold, *(t for _, t in bundle.thresholds_by_pixel_size))
    if not all(0.0 < t < 1.0 for t in thresholds):  # as a threshold a user gives: none marks all, or nothing
        raise ModelFileError(f"{path} has a decision threshold outside (0, 1): {list(thresholds)}; it is damaged "
                             "or was not written by DeepCL")
    if any(not 1 <= k <= 4 for _, k in bundle.input_scales_by_pixel_size):  # detection's MAX_INPUT_SCALE
        raise ModelFileError(f"{path} has an input scale outside 1 to 4: {bundle.input_scales_by_pixel_size}")
    if len(bundle.bands) != bundle.config.in_channels:
        raise ModelFileError(f"{path} names {len(bundle.bands)} bands but its network takes "
                             f"{bundle.config.in_channels}")
    return bundle
