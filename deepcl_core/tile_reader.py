"""Tiles read and normalised ahead of the network by reader threads, handed out in order.

GDAL releases the GIL while it decodes, so reading overlaps with the network. A GDAL dataset must
not be used by two threads at once: each reader thread has its own handles of the pair (the
first thread takes the ones already open, the others open their own). Beside a GPU, decoding the
inputs is what limits the pipeline, and several threads decode tiles side by side; on the CPU,
where the network needs every core, detection reads in turn with it instead
(:func:`deepcl_core.model.inference.overlaps_io`)."""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Generic, Iterable, Iterator, List, Tuple, TypeVar

Handles = TypeVar("Handles")
Item = TypeVar("Item")
Position = Tuple[int, int]


class TileReader(Generic[Handles, Item], Iterator[Item]):
    """``read(handles, position)`` for each of ``positions`` in ``threads`` threads, at most
    ``depth`` tiles ahead of the consumer (at least one per thread). ``handles`` are the already
    open ones for the first thread and ``open_handles()`` for each further thread. An error in a
    thread is re-raised by ``__next__``; :meth:`close` drops the tiles not yet read."""

    def __init__(self, read: Callable[[Handles, Position], Item], positions: Iterable[Position], handles: Handles,
                 open_handles: Callable[[], Handles], threads: int = 1, depth: int = 2) -> None:
        self._read = read
        self._positions = iter(positions)
        self._spare: List[Handles] = [handles]
        self._open_handles = open_handles
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="deepcl-reader")
        self._pending: Deque[Future] = deque()
        for _ in range(max(depth, threads, 1)):
            self._submit_next()

    def _submit_next(self) -> None:
        position = next(self._positions, None)
        if position is not None:
            self._pending.append(self._pool.submit(self._read_in_thread, position))

    def _read_in_thread(self, position: Position) -> Item:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            with self._lock:
                spare = self._spare.pop() if self._spare else None
            handles = self._local.handles = spare if spare is not None else self._open_handles()
        return self._read(handles, position)

    def __next__(self) -> Item:
        if not self._pending:
            raise StopIteration
        item = self._pending.popleft().result()
        self._submit_next()
        return item

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "TileReader[Handles, Item]":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
