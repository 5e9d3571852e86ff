"""The reader threads' contract: tiles come in order whatever thread read them, each thread uses
handles of its own, an error reaches the consumer at its tile, and closing stops the reading."""
from __future__ import annotations

import random
import threading
import time

import pytest

from deepcl_core.tile_reader import TileReader

POSITIONS = [(x, y) for y in range(0, 500, 100) for x in range(0, 400, 100)]  # 20 tiles


class Handles:
    """Stands for one thread's GDAL datasets: it fails the test if two threads use it at once."""

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.users = set()

    def read(self, position):
        assert self.busy.acquire(blocking=False), "handles shared between threads"
        try:
            self.users.add(threading.get_ident())
            time.sleep(random.uniform(0, 0.01))
            return position
        finally:
            self.busy.release()


def test_tiles_come_in_order_and_each_thread_has_its_own_handles():
    first, opened = Handles(), []

    def open_handles():
        opened.append(Handles())
        return opened[-1]

    with TileReader(lambda handles, position: handles.read(position), POSITIONS, first, open_handles,
                    threads=4, depth=6) as reader:
        assert list(reader) == POSITIONS
    assert len(opened) <= 3 and all(len(h.users) == 1 for h in [first, *opened] if h.users)
    assert first.users  # the handles already open are used, not opened again


def test_an_error_reaches_the_consumer_at_its_tile():
    def read(handles, position):
        if position == POSITIONS[7]:
            raise ValueError("cannot read tile 7")
        return handles.read(position)

    reader = TileReader(read, POSITIONS, Handles(), Handles, threads=3, depth=4)
    got = [next(reader) for _ in range(7)]
    with pytest.raises(ValueError, match="tile 7"):
        next(reader)
    reader.close()
    assert got == POSITIONS[:7]


def test_closing_early_stops_reading():
    reads = []

    def read(handles, position):
        reads.append(position)
        return handles.read(position)

    reader = TileReader(read, POSITIONS, Handles(), Handles, threads=2, depth=3)
    assert next(reader) == POSITIONS[0]
    reader.close()
    assert len(reads) <= 1 + 3  # the tile taken and at most depth more
