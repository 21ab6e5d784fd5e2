"""BatchService: one model per process, batching across streams, without timing asserts.

A gate (threading.Event) holds the worker inside a batch so that what queues behind it is
known exactly; no test asserts how long anything took.
"""

import threading

import pytest

from streamer.core.services import BatchService


class Gated:
    """A batch function whose first call waits for ``release``; records every batch."""

    def __init__(self, fail_on=None) -> None:
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, xs):
        self.batches.append(list(xs))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never released the batch"
        if self.fail_on is not None and self.fail_on in xs:
            raise ValueError(f"bad input {self.fail_on}")
        return [2 * x for x in xs]


def test_requests_that_arrive_during_a_batch_go_together_in_the_next():
    model = Gated()
    svc = BatchService("m", model, max_batch=4, max_wait_s=0.0)
    try:
        first = svc.submit(0)
        assert model.entered.wait(30)
        later = [svc.submit(i) for i in range(1, 7)]  # 6 queue behind the running batch
        assert svc.depth == 6
        model.release.set()
        assert first.result(30) == 0 and [f.result(30) for f in later] == [2 * i for i in range(1, 7)]
        assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]  # max_batch bounds each batch
        assert (svc.batches, svc.items, svc.largest) == (3, 7, 4)
    finally:
        svc.close()


def test_a_stream_alone_never_waits_for_company_but_streams_together_do():
    """With two clients attached the worker waits (up to max_wait_s) to fill a batch; a large
    max_wait_s and a full batch show it did wait for the second stream's request."""
    model = Gated()
    model.release.set()
    svc = BatchService("m", model, max_batch=2, max_wait_s=30.0)
    try:
        svc.attach(), svc.attach()
        a = svc.submit(1)          # taken, then the worker waits for company (2 clients)
        b = svc.submit(2)          # fills the batch: the wait ends at once
        assert a.result(30) == 2 and b.result(30) == 4
        assert model.batches == [[1, 2]]
        svc.detach(), svc.detach()
        assert svc.clients == 0
        assert svc(5) == 10        # alone: no wait for company (max_wait_s is 30 s; a hang would time out)
        assert model.batches[-1] == [5]
    finally:
        svc.close()


def test_a_failed_batch_is_run_again_one_by_one_so_only_the_bad_input_fails():
    model = Gated(fail_on=3)
    svc = BatchService("m", model, max_batch=8, max_wait_s=0.0)
    try:
        first = svc.submit(0)
        assert model.entered.wait(30)
        futs = {i: svc.submit(i) for i in (1, 2, 3, 4)}
        model.release.set()
        assert first.result(30) == 0
        assert [futs[i].result(30) for i in (1, 2, 4)] == [2, 4, 8]
        with pytest.raises(ValueError, match="bad input 3"):
            futs[3].result(30)
        assert [1, 2, 3, 4] in model.batches and [3] in model.batches and [1] in model.batches
    finally:
        svc.close()


def test_a_batch_returning_the_wrong_count_is_an_error_per_request():
    svc = BatchService("m", lambda xs: [], max_batch=8)
    try:
        with pytest.raises(RuntimeError, match="0 results for 1 inputs"):
            svc(1)
    finally:
        svc.close()


def test_cancelled_requests_are_not_run():
    model = Gated()
    svc = BatchService("m", model, max_batch=8, max_wait_s=0.0)
    try:
        first = svc.submit(0)
        assert model.entered.wait(30)
        keep, drop = svc.submit(1), svc.submit(2)
        assert drop.cancel()  # a dropped window cancels its audio request
        model.release.set()
        assert first.result(30) == 0 and keep.result(30) == 2
        assert model.batches == [[0], [1]]
    finally:
        svc.close()


def test_close_ends_the_worker_and_refuses_new_requests():
    model = Gated()
    model.release.set()
    svc = BatchService("m", model)
    assert svc(1) == 2
    worker = [t for t in threading.enumerate() if t.name == "service m"]
    svc.close()
    assert worker and not worker[0].is_alive()
    with pytest.raises(RuntimeError, match="the m service is closed"):
        svc.submit(2)
    svc.close()  # idempotent


def test_a_burst_from_one_stream_does_not_hold_back_another_streams_request():
    """A client that sends a recording ahead of real time queues many windows at once; another
    call's window that arrives after them goes in the next batch, not after the whole burst."""
    model = Gated()
    svc = BatchService("m", model, max_batch=3, max_wait_s=0.0)
    try:
        first = svc.submit(0, stream="flood")
        assert model.entered.wait(30)
        burst = [svc.submit(i, stream="flood") for i in range(1, 10)]
        other = svc.submit(100, stream="call")
        model.release.set()
        assert other.result(30) == 200 and all(f.result(30) == 2 * i for i, f in enumerate(burst, 1))
        assert first.result(30) == 0
        assert model.batches[1] == [1, 100, 2]  # each stream's oldest first, then the rest in order
        assert [x for b in model.batches[2:] for x in b] == list(range(3, 10))  # the flood's own order kept
    finally:
        svc.close()


def test_one_at_a_time_a_call_behind_a_burst_waits_for_one_request_not_the_burst():
    """The audio model scores one window a call (``max_batch`` 1): the flood's next window is always
    older than the other call's, yet the other call goes next because the flood was served last."""
    model = Gated()
    svc = BatchService("m", model, max_batch=1, max_wait_s=0.0)
    try:
        svc.submit(0, stream="flood")
        assert model.entered.wait(30)
        burst = [svc.submit(i, stream="flood") for i in range(1, 6)]
        other = [svc.submit(100, stream="call"), svc.submit(101, stream="call")]
        model.release.set()
        assert [f.result(30) for f in burst + other] == [2, 4, 6, 8, 10, 200, 202]
        assert model.batches == [[0], [1], [100], [2], [101], [3], [4], [5]]  # turn by turn
    finally:
        svc.close()
