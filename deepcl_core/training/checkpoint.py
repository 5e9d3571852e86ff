"""The training checkpoint: everything needed to continue after the last finished epoch (weights,
optimiser, schedule, best weights so far, history), written atomically after every epoch."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..errors import InputError
from ..model_file import atomic_torch_save, damaged_part
from .pairs import PairFiles

FORMAT_NAME = "deepcl-checkpoint"
FORMAT_VERSION = 1


CHECKPOINT_SUFFIX = ".ckpt"


def checkpoint_path_for(out: Path) -> Path:
    """Next to the model file, so that ``--resume`` with the same ``--out`` finds it."""
    return out.with_name(out.name + CHECKPOINT_SUFFIX)


def model_path_for(checkpoint: Path) -> Optional[Path]:
    """The model file whose training writes ``checkpoint`` (:func:`checkpoint_path_for`'s inverse);
    None for a checkpoint of another name."""
    name = checkpoint.name
    return checkpoint.with_name(name[:-len(CHECKPOINT_SUFFIX)]) if name.endswith(CHECKPOINT_SUFFIX) else None


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Write to a temporary file and rename: an interruption mid-write keeps the previous epoch's."""
    atomic_torch_save({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint at {path}; run without --resume to start training")
    try:  # read once: the checksum check and torch's reader both take the bytes from memory
        data = path.read_bytes()
    except OSError as exc:  # in the words it had when torch's reader opened the file
        raise _unreadable(path, exc) from None
    part = damaged_part(data)  # torch's reader checks no checksum: damaged weights would train on silently
    if part is not None:
        raise InputError(f"checkpoint {path} is damaged: its part {part} does not match its checksum; delete it "
                         "and train without --resume")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise _unreadable(path, exc) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not a DeepCL training checkpoint; delete it or choose another --out")
    if state.get("format_version") != FORMAT_VERSION:
        raise InputError(f"checkpoint {path} has version {state.get('format_version')}, this DeepCL "
                         f"reads {FORMAT_VERSION}; start anew with --overwrite")
    return state


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(f"checkpoint {path} cannot be read ({str(exc)[:120]}); delete it and train without --resume")


def pair_paths(pairs: Sequence[PairFiles]) -> List[str]:
    """The pairs as a checkpoint records them: their before images' real paths, sorted, so that a
    resumed run given its data folders spelled otherwise (relative or absolute, through a link,
    from another working folder) is recognised as the same run."""
    return sorted(str(pair.before.resolve()) for pair in pairs)


def same_pairs(recorded: Any, current: List[str]) -> bool:
    """Whether a checkpoint's list of pairs, ``recorded``, names the pairs of ``current`` (as
    :func:`pair_paths` gives them). Checkpoints written before paths were resolved hold them as
    given: a relative one is resolved against the working folder, which holds when the run is
    resumed from the folder it started in (the one it was given in is not recorded)."""
    if not isinstance(recorded, list) or not all(isinstance(path, str) for path in recorded):
        return False
    return sorted(os.path.realpath(path) for path in recorded) == current
