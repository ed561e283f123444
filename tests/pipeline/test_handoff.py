"""The queue between request threads and the batcher: it looks often while many items come and backs off while
few do; a run of captures stops at another kind of item, at a count and at a number of bytes."""
import threading

import pytest

from mdc_middleware.records.record import Record

from tests.helpers import record


def test_the_consumer_looks_often_while_many_items_come_and_backs_off_while_few_do():
    import queue as stdlib_queue

    from mdc_middleware.pipeline.handoff import HandoffQueue

    handoff = HandoffQueue(100, poll_interval=0.01, idle_interval=0.1, few=2, many=4, quiet_after=10.0)
    waits = []
    wait = handoff._cond.wait
    handoff._cond.wait = lambda timeout: waits.append(timeout) or wait(timeout)
    with pytest.raises(stdlib_queue.Empty):
        handoff.get(timeout=1.0)
    assert waits[:5] == [0.01, 0.02, 0.04, 0.08, 0.1]  # idle: ten wake-ups a second, not a hundred
    assert len(waits) <= 15
    waits.clear()
    threading.Timer(0.05, handoff.put_nowait, args=("item",)).start()  # below wake_at: found by polling
    assert handoff.get(timeout=1.0) == "item"
    assert waits == [0.1]
    assert handoff._next_poll == 0.1  # one item (fewer than few): the next look comes no sooner

    arrivals: list = []

    def wait_while_items_arrive(timeout):
        waits.append(timeout)
        handoff._items.extend(arrivals)
        arrivals.clear()

    handoff._cond.wait = wait_while_items_arrive
    # more than many: look again soon; from few to many: as often as before; fewer than few: half as often
    for count, next_poll in ((5, 0.01), (3, 0.01), (2, 0.01), (1, 0.02), (1, 0.04), (9, 0.01)):
        arrivals.extend(range(count))
        assert handoff.get(timeout=1.0) == 0
        while handoff.qsize():
            handoff.get_nowait()
        assert handoff._next_poll == next_poll, (count, handoff._next_poll)


def test_after_a_quiet_spell_the_consumer_sleeps_until_a_put_rings():
    import time

    from mdc_middleware.pipeline.handoff import HandoffQueue

    handoff = HandoffQueue(100, poll_interval=0.01, idle_interval=0.1, quiet_after=0.3)
    waits = []
    wait = handoff._cond.wait
    handoff._cond.wait = lambda timeout: waits.append(timeout) or wait(timeout)
    threading.Timer(1.0, handoff.put_nowait, args=("item",)).start()  # one item, far below wake_at
    started = time.monotonic()
    assert handoff.get(timeout=30.0) == "item"
    assert time.monotonic() - started < 5.0  # woken by the put, not by the 30 s timeout
    assert max(waits) > 20.0  # after 0.3 s of polls it slept for the rest of the timeout…
    assert len(waits) <= 12  # …instead of a poll every 0.1 s
    assert waits[-1] <= 0.01  # rung: it looked a poll interval later
    assert handoff._empty_since is None and not handoff._doorbell

    waits.clear()  # items coming: no quiet spell, so a put below wake_at rings nothing; it is found by a poll
    handoff._cond.wait = lambda timeout: waits.append(timeout) or handoff._items.append("next") or wait(0)
    assert handoff.get(timeout=30.0) == "next"
    assert len(waits) == 1 and waits[0] <= 0.1  # a poll, not a sleep until the timeout


def test_a_run_of_captures_stops_at_another_kind_at_the_count_and_at_the_bytes():
    from mdc_middleware.pipeline.handoff import HandoffQueue

    queue = HandoffQueue(100)
    for i in range(5):
        queue.put_nowait(((i,), 10))
    queue.put_nowait((record(1), 10))
    queue.put_nowait(((9,), 10))
    assert [item for item, _ in queue.pop_run(tuple, 3, 1000)] == [(0,), (1,), (2,)]
    assert [item for item, _ in queue.pop_run(tuple, 3, 15)] == [(3,), (4,)]  # the bytes cap: 10 + 10 ≥ 15
    assert queue.pop_run(tuple, 3, 1000) == []  # a record comes next
    assert isinstance(queue.get_nowait()[0], Record)
    assert [item for item, _ in queue.pop_run(tuple, 3, 1000)] == [(9,)]
