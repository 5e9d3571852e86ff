"""Run write jobs in a background thread, in order, a few behind the caller: compressing and
writing the finished rows of one tile row overlaps with the network working on the next (GDAL's
compressors and numpy release the GIL). The mirror image of :mod:`deepcl_core.tile_reader`."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

Job = Callable[[], None]
_STOP = object()


class WriteBehind:
    """``submit(job)`` queues a job (blocking while ``depth`` are waiting, so memory stays bounded);
    ``finish()`` waits for all of them. An error in a job is re-raised by the next ``submit`` or by
    ``finish``; jobs queued after a failed one are dropped. ``depth=0`` runs jobs in the caller."""

    def __init__(self, depth: int = 2) -> None:
        self._depth = depth
        self._error: Optional[BaseException] = None
        self._raised = False
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread: Optional[threading.Thread] = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, daemon=True, name="deepcl-writer")
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # handed to the caller, never lost
                    self._error = exc

    def submit(self, job: Job) -> None:
        self._raise_pending()
        if self._thread is None:
            job()
        else:
            self._queue.put(job)

    def finish(self) -> None:
        """Wait until every queued job has run; raise the first job error."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def close(self) -> None:
        """Stop: the job running ends, those queued are skipped, and no error is raised (the caller
        deletes what they would have written next)."""
        if self._thread is not None:
            self._error = self._error or _Abandoned()
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _raise_pending(self) -> None:
        # The error stays set (raised once): the thread keeps skipping the jobs behind it.
        if self._error is not None and not self._raised and not isinstance(self._error, _Abandoned):
            self._raised = True
            raise self._error

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Abandoned(Exception):
    """Marks a writer closed early: queued jobs are skipped, not run."""
