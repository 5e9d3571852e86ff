"""Model files that must be refused: empty, truncated, of another format, from a newer format
version, for another band count, and a pickle whose unpickling would run code (it would create a
marker folder, so a test can prove that the code never ran)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch

from deepcl_core.model import NetworkConfig, build_network
from deepcl_core.model_file import FORMAT_VERSION, ModelBundle, save_model

TINY = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))


class RunsCode:
    """Unpickling calls ``os.mkdir(marker)``: proof, if the folder appears, that code ran on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# The bad model files every front end must refuse (keys of the ``bad_models`` fixture).
BAD_MODEL_CASES = ("empty", "truncated", "another_format_text", "another_format_state_dict",
                   "newer_format_version", "another_band_count", "pickle_that_runs_code")


def tiny_bundle(bands: Sequence[str] = ("red", "green", "blue")) -> ModelBundle:
    torch.manual_seed(0)
    config = NetworkConfig.from_dict({**TINY.to_dict(), "in_channels": len(bands)})
    return ModelBundle(config, build_network(config).state_dict(), bands=tuple(bands), trained=False)


def hostile_pickle(path: Path, marker: Path) -> Path:
    """A model file like any other, except for one provenance entry that runs code when unpickled."""
    data = tiny_bundle().to_dict()
    data["provenance"] = {"note": RunsCode(marker)}
    torch.save(data, path)
    return path


def bad_model_files(folder: Path) -> Tuple[Dict[str, Tuple[Path, Sequence[str]]], Path]:
    """{case: (file, words its error must hold)} and the marker the hostile pickle would create."""
    good = folder / "good.pt"
    save_model(tiny_bundle(), good)
    cases: Dict[str, Tuple[Path, Sequence[str]]] = {}
    empty = folder / "empty.pt"
    empty.touch()
    cases["empty"] = (empty, ["empty"])
    truncated = folder / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (truncated, ["not a readable deepcl model file"])
    text = folder / "text.pt"
    text.write_text("not weights\n")
    cases["another_format_text"] = (text, ["not a readable deepcl model file"])
    state_dict = folder / "state_dict.pt"
    torch.save(build_network(TINY).state_dict(), state_dict)
    cases["another_format_state_dict"] = (state_dict, ["not a deepcl model file"])
    newer = folder / "newer.pt"
    data = tiny_bundle().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, newer)
    cases["newer_format_version"] = (newer, ["version", "update"])
    four_bands = folder / "four_bands.pt"
    save_model(tiny_bundle(("red", "green", "blue", "nir")), four_bands)
    cases["another_band_count"] = (four_bands, ["4", "has 3"])
    marker = folder / "code-ran"
    cases["pickle_that_runs_code"] = (hostile_pickle(folder / "hostile.pt", marker), ["never run"])
    return cases, marker
