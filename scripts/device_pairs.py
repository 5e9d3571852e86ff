"""Training pairs in a file that travels to a GPU machine without GDAL: each pair read, aligned and
normalised here by the real loader (``deepcl_core.training.pairs.load_pairs``), then stored as the
0–1 stretched values quantised to 8 bits (below the 16-bit Sentinel-2 noise, and finer than the
8-bit aerial sources), label and validity as bit masks, the whole xz-compressed.

    python scripts/device_pairs.py pack OUT.npz.xz PAIR_FOLDER...     (here, with GDAL)
    load_packed(OUT.npz.xz) -> [LoadedPair, ...]                      (there, without GDAL)
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepcl_core.normalization import NormalizationSpec  # noqa: E402
from deepcl_core.training.options import DEFAULT_BANDS  # noqa: E402
from deepcl_core.training.pairs import LoadedPair, PairFiles  # noqa: E402


def pack(pairs: Sequence[LoadedPair], spec: NormalizationSpec, out: Path) -> None:
    arrays: Dict[str, np.ndarray] = {}
    index = []
    for number, pair in enumerate(pairs):
        mean, std = spec.per_band(pair.before.shape[0])
        for role in ("before", "after"):
            scaled = getattr(pair, role) * std + mean  # back to the clipped 0-1 stretch
            arrays[f"{number}_{role}"] = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
        arrays[f"{number}_label"] = np.packbits(pair.label.astype(bool))
        arrays[f"{number}_valid"] = np.packbits(pair.valid)
        index.append({"files": pair.files.to_dict(), "shape": list(pair.shape), "pixel_size_m": pair.pixel_size_m})
    arrays["index"] = np.frombuffer(json.dumps({"pairs": index, "normalization": spec.to_dict()}).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(buffer.getvalue(), preset=6))


def load_packed(path: Path) -> List[LoadedPair]:
    """The pairs as the loader gave them, to within the 8-bit quantisation."""
    arrays = np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes())))
    meta = json.loads(arrays["index"].tobytes().decode())
    spec = NormalizationSpec.from_dict(meta["normalization"])
    pairs = []
    for number, entry in enumerate(meta["pairs"]):
        height, width = entry["shape"]
        count = height * width
        valid = np.unpackbits(arrays[f"{number}_valid"])[:count].reshape(height, width).astype(bool)
        label = np.unpackbits(arrays[f"{number}_label"])[:count].reshape(height, width)
        images = []
        for role in ("before", "after"):
            scaled = arrays[f"{number}_{role}"].astype(np.float32) / 255
            mean, std = spec.per_band(scaled.shape[0])
            images.append(((scaled - mean) / std * valid).astype(np.float32))
        files = PairFiles(**{k: (v if k in ("name", "group") else Path(v)) for k, v in entry["files"].items()})
        pairs.append(LoadedPair(files, images[0], images[1], label, valid, entry.get("pixel_size_m")))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packing = sub.add_parser("pack")
    packing.add_argument("out", type=Path)
    packing.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    from deepcl_core.training.pairs import find_pairs, load_pairs

    spec = NormalizationSpec()
    pairs = load_pairs(find_pairs(args.folders), DEFAULT_BANDS, spec)
    pack(pairs, spec, args.out)
    print(f"{len(pairs)} pairs -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
