"""deepcl:detectchanges as background tasks of the QGIS task manager (what the dock panel does):
two detections at once give the same results as one at a time; a cancelled task ends within a
couple of tiles while the main thread's event loop keeps running, leaves no file, and the next
run works."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from reliability.rasters import files_in, geotransform, noise, read_band, write

ALG = "deepcl:detectchanges"


def parameters(pair, model: Path, out: Path) -> Dict[str, Any]:
    out.mkdir(exist_ok=True)
    return {"BEFORE": str(pair[0]), "AFTER": str(pair[1]), "MODEL": str(model), "CHANGE": str(out / "change.tif"),
            "CONFIDENCE": str(out / "confidence.tif"), "THRESHOLD": 0.3, "TILE_SIZE": 32, "OVERLAP": 8,
            "BATCH_SIZE": 1, "DEVICE": "cpu"}


def text_feedback(cancel_at: str = ""):
    """A feedback that records progress texts (QGIS 3.22 has no signal for them) and cancels
    itself at the first text starting with ``cancel_at``."""
    from qgis.core import QgsProcessingFeedback

    class TextFeedback(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.texts: List[str] = []

        def setProgressText(self, text: str) -> None:  # noqa: N802 (Qt API); called in the task's thread
            super().setProgressText(text)
            self.texts.append(text)
            if cancel_at and text.startswith(cancel_at):
                self.cancel()

    return TextFeedback()


class Run:
    """One task in the task manager; Python keeps its context and feedback alive until it ends."""

    def __init__(self, params: Dict[str, Any], cancel_at: str = "") -> None:
        from qgis.core import QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProject

        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = text_feedback(cancel_at)
        self.outcome: List[bool] = []
        algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
        self.task = QgsProcessingAlgRunnerTask(algorithm, params, self.context, self.feedback)
        self.task.executed.connect(lambda ok, results: self.outcome.append(ok))
        QgsApplication.taskManager().addTask(self.task)


def wait_for(runs: List[Run], timeout: float = 120.0) -> float:
    """Spin the main event loop until every run has ended; returns the longest gap between two
    turns of the loop (how long QGIS would have been frozen)."""
    from qgis.core import QgsApplication

    longest, last, deadline = 0.0, time.monotonic(), time.monotonic() + timeout
    while not all(run.outcome for run in runs):
        assert time.monotonic() < deadline, "the tasks did not end"
        QgsApplication.processEvents()
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        time.sleep(0.005)
    return longest


@pytest.fixture
def pair(tmp_path: Path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    return (write(folder / "b.tif", noise((3, 120, 150), 0), geotransform()),
            write(folder / "a.tif", noise((3, 120, 150), 1), geotransform()))


def test_two_detections_at_once_match_one_at_a_time(deepcl_provider, pair, tiny_model_path, tmp_path):
    import processing

    alone = [processing.run(ALG, parameters(pair, tiny_model_path, tmp_path / f"alone_{i}")) for i in range(2)]
    runs = [Run(parameters(pair, tiny_model_path, tmp_path / f"together_{i}")) for i in range(2)]
    wait_for(runs)
    assert [run.outcome for run in runs] == [[True], [True]]
    for i in range(2):
        together = tmp_path / f"together_{i}"
        np.testing.assert_array_equal(read_band(together / "change.tif"), read_band(Path(alone[i]["CHANGE"])))
        np.testing.assert_array_equal(read_band(together / "confidence.tif"), read_band(Path(alone[i]["CONFIDENCE"])))
        assert files_in(together) == ["change.tif", "confidence.tif"]


def test_cancelled_task_ends_soon_leaves_nothing_and_the_next_run_works(deepcl_provider, pair, tiny_model_path,
                                                                      tmp_path):
    out = tmp_path / "cancelled"
    run = Run(parameters(pair, tiny_model_path, out), cancel_at="tile 2 ")
    frozen = wait_for([run])
    assert run.outcome == [False]
    tiles = [text for text in run.feedback.texts if text.startswith("tile ")]
    assert tiles and len(tiles) <= 2 + 2, tiles  # cancelled after tile 2: at most a couple more
    assert frozen < 2.0  # the main thread never waited on the detection
    assert files_in(out) == []
    again = Run(parameters(pair, tiny_model_path, tmp_path / "again"))
    wait_for([again])
    assert again.outcome == [True] and files_in(tmp_path / "again") == ["change.tif", "confidence.tif"]
