"""The batcher's pacer: the GIL is given away after each millisecond of continuous work, counted from when the
work started, so a short look at the queue never hands the GIL over (each hand-over costs the batcher CPU)."""
import time

import pytest

from mdc_middleware.pipeline import batching
from mdc_middleware.pipeline.batching import Pacer
from mdc_middleware.pipeline.writer import Writer
from mdc_middleware.storage.local import LocalSink
from tests.helpers import record


@pytest.fixture
def give_ways(monkeypatch):
    calls = []
    monkeypatch.setattr(batching, "give_way", lambda: calls.append(time.perf_counter()))
    return calls


def work_for(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def test_work_shorter_than_a_millisecond_after_a_wait_gives_nothing_away(give_ways):
    pacer = Pacer()
    short_looks = 0
    for _ in range(10):  # looks at the queue, each after a wait, each meant to be done within a millisecond
        time.sleep(0.003)
        give_ways.clear()
        started = time.perf_counter()
        pacer.working()
        for _ in range(3):
            work_for(0.0001)
            pacer.pause()
        if time.perf_counter() - started < 0.0009:  # a look the machine did not stretch past a millisecond
            short_looks += 1
            assert give_ways == []
    assert short_looks >= 1


def test_continuous_work_gives_way_about_once_a_millisecond(give_ways):
    pacer = Pacer()
    pacer.working()
    started = time.perf_counter()
    while time.perf_counter() - started < 0.0105:
        work_for(0.0001)
        pacer.pause()
    assert 3 <= len(give_ways) <= 10  # about 10; fewer where the machine preempts this thread
    gaps = [later - earlier for earlier, later in zip(give_ways, give_ways[1:])]
    assert min(gaps) >= 0.001


def test_the_batcher_restarts_the_count_when_it_wakes_from_waiting(tmp_path, give_ways):
    """A record that arrives after a quiet spell is encoded without a give-way, though the last one was long
    before: the batcher's loop calls ``working()`` when it wakes."""
    writer = Writer(LocalSink(tmp_path), flush_interval=60)
    try:
        writer.submit(record(1), rows=1)
        assert writer.force_flush(10)
        time.sleep(0.05)
        give_ways.clear()
        writer.submit(record(2), rows=1)
        assert writer.force_flush(10)
        assert give_ways == []
        assert writer.metrics.snapshot()["rows_written"] == 2
    finally:
        writer.shutdown(5)
