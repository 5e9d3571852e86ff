"""Cancel at any moment: at every point where the engine polls the cancel callable (before the
first tile, between tiles, before closing the rasters, while writing polygons) the run stops with
Cancelled, leaves no file (partial ones included), and the next run gives the same outputs as a
run that was never interrupted."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from deepcl_core.detect import DetectOptions, detect_changes
from deepcl_core.errors import Cancelled
from reliability.rasters import files_in, read_band
import core_test_helpers

outputs_in = partial(core_test_helpers.outputs_in, distance=False, polygons=True)

OPTIONS = DetectOptions(tile_size=32, overlap=8, batch_size=1, device="cpu", threshold=0.3)


class CancelAt:
    """Answers False until its ``at``-th poll (0-based), True from then on; counts polls."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.polls = 0

    def __call__(self) -> bool:
        self.polls += 1
        return self.polls > self.at


def test_cancel_at_every_poll_leaves_nothing_and_the_next_run_works(good_pair, tiny_model, tmp_path):
    reference = outputs_in(tmp_path / "reference")
    counter = CancelAt(10 ** 9)
    detect_changes(*good_pair, reference, OPTIONS, cancel=counter, model=tiny_model)
    assert counter.polls > 5  # tiles, the close and the polygons all poll
    for at in range(counter.polls):
        out = tmp_path / f"cancelled_{at}"
        with pytest.raises(Cancelled):
            detect_changes(*good_pair, outputs_in(out), OPTIONS, cancel=CancelAt(at), model=tiny_model)
        assert files_in(out) == [], f"cancelled at poll {at}"
    again = outputs_in(tmp_path / "again")
    detect_changes(*good_pair, again, OPTIONS, model=tiny_model)
    np.testing.assert_array_equal(read_band(again.change), read_band(reference.change))
    np.testing.assert_array_equal(read_band(again.confidence), read_band(reference.confidence))
