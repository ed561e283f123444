"""The batcher's pacer: the GIL is given away after each millisecond of continuous work, counted from when the
work started, so a short look at the queue under load never hands the GIL over (each hand-over costs the batcher
CPU); a light look (a few items waited) gives way after a tenth of a millisecond, so a request arriving during it
does not wait for all of it."""
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


def test_a_light_look_gives_way_after_a_tenth_of_a_millisecond(give_ways):
    pacer = Pacer()
    started = time.perf_counter()
    pacer.working(light=True)
    work_for(0.00002)
    pacer.pause()
    if time.perf_counter() - started < batching.LIGHT_SLICE * 0.9:  # unless the machine stretched it
        assert give_ways == []  # within its slice
    give_ways.clear()
    pacer.working(light=True)
    work_for(batching.LIGHT_SLICE)
    pacer.pause()
    assert len(give_ways) == 1
    pacer.working()  # the next look, under load: the millisecond slice again
    work_for(batching.LIGHT_SLICE * 2)
    pacer.pause()
    assert len(give_ways) == 1 or time.perf_counter() - give_ways[-1] >= batching.SLICE  # only a stretched machine


def test_the_batcher_takes_a_light_look_when_few_items_wait(tmp_path, monkeypatch):
    looks = []
    original = Pacer.working
    monkeypatch.setattr(Pacer, "working", lambda self, light=False: (looks.append(light), original(self, light))[1])
    writer = Writer(LocalSink(tmp_path), flush_interval=60)
    try:
        assert writer.force_flush(10)  # the batcher is up, and waits for items
        time.sleep(0.05)
        writer.submit(record(1), rows=1)
        assert writer.force_flush(10)
        assert looks and looks[0] is True  # it woke to one record
        for _ in range(5):  # records submitted at once wait together for the batcher's next look
            looks.clear()
            for number in range(batching.LIGHT_LOOK * 4):
                writer.submit(record(number), rows=1)
            assert writer.force_flush(10)
            if False in looks:
                break
        assert False in looks
    finally:
        writer.shutdown(5)


def test_the_batcher_restarts_the_count_when_it_wakes_from_waiting(tmp_path, give_ways, monkeypatch):
    """A record that arrives after a quiet spell is encoded without a give-way, though the last one was long
    before: the batcher's loop calls ``working()`` when it wakes. (With the millisecond slice for the light look
    too: on a cold start the encoding of one record can take a tenth of a millisecond.)"""
    monkeypatch.setattr(batching, "LIGHT_SLICE", batching.SLICE)
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
