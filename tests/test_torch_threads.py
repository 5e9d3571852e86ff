"""torch's thread count, set for a block, when two runs in one process set it at once."""
from __future__ import annotations

import torch

from deepcl_core.model.inference import inference_threads, torch_threads


def test_interleaved_blocks_leave_the_latest_open_ones_count_and_then_the_first():
    """Run A sets 2 threads, run B 1 (preparing its network); A ends first. A save-and-restore gave
    B's block A's earlier count, and left B's saved 2 threads after both ended."""
    before = torch.get_num_threads()
    first, second = torch_threads(2), torch_threads(1)
    first.__enter__()
    second.__enter__()
    assert torch.get_num_threads() == 1
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 1  # B's block is still running
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == before


def test_a_thread_started_during_another_runs_block_ends_on_the_hosts_count():
    """A QGIS task's thread first using torch while run A holds one thread (preparing its network)
    takes A's 1. Its own run restored that 1 when it ended, and setting it made it every later
    thread's count too: each detection after computed its whole network on one core."""
    import threading

    host = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = {}

    def run_b() -> None:
        seen["born with"] = torch.get_num_threads()
        with torch_threads(2):
            pass
        seen["left with"] = torch.get_num_threads()

    try:
        with torch_threads(1):  # run A preparing, in this thread
            task = threading.Thread(target=run_b)
            task.start()
            task.join(30)
        assert seen == {"born with": 1, "left with": 2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(host)


def test_nested_blocks_restore_in_turn_and_none_changes_nothing():
    before = torch.get_num_threads()
    with torch_threads(2):
        with torch_threads(1):
            with torch_threads(None):
                assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_a_run_starting_while_another_prepares_gets_the_hosts_thread_count(monkeypatch):
    """Run A holds one thread while it prepares; run B, starting then, read that 1 as "what torch
    would use anyway" and computed its whole network on one thread (identical maps, several times
    slower on a machine with more cores)."""
    from deepcl_core.model import inference

    monkeypatch.setattr(inference, "available_cores", lambda: 8)
    host = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        alone = inference_threads(torch.device("cpu"))
        with torch_threads(1):  # run A preparing
            assert inference_threads(torch.device("cpu")) == alone == 4
    finally:
        torch.set_num_threads(host)


def test_a_block_ending_beside_another_threads_block_gives_its_thread_back_its_own_count():
    """torch's count is each thread's own. Run A (a QGIS task's thread) ended while run B, in another
    thread, held one thread to prepare: A's thread was given B's count, 1, and every later detection
    in that pooled thread computed its whole network on one core."""
    import threading

    host = torch.get_num_threads()
    torch.set_num_threads(2)
    a_started, b_prepares, a_ended, seen = threading.Event(), threading.Event(), threading.Event(), {}

    def run_b() -> None:
        with torch_threads(1):  # preparing its network
            b_prepares.set()
            a_ended.wait(30)

    def run_a() -> None:
        before = torch.get_num_threads()  # a pooled thread's, started before B's block
        a_started.set()
        with torch_threads(2):
            b_prepares.wait(30)
        a_ended.set()
        seen["a"] = (before, torch.get_num_threads())

    try:
        threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
        threads[0].start()
        a_started.wait(30)
        threads[1].start()
        for thread in threads:
            thread.join(60)
        assert seen["a"] == (2, 2)
        assert torch.get_num_threads() == 2  # this thread's, untouched by either
    finally:
        torch.set_num_threads(host)
