"""Dynamic batching with a pure-numpy model, made deterministic by the batcher's own rules.

With a very long ``max_delay_s`` a batch closes only when it is full or when ``active_requests``
says nobody else is coming, so the tests control exactly which requests share an execution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_agent.serving.batcher import DirectExecutor, DynamicBatcher, Execution, Feeds
from edge_agent.serving.errors import InferenceError, ServerUnavailable
from edge_agent.serving.statistics import Timings

FOREVER = 3600.0


class Model:
    """``y = 10 x + 1`` per row; fails when a batch holds a NaN; records every execution's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def run(self, feeds: Feeds, raw: bool) -> Feeds:
        x = feeds["x"]
        with self.lock:
            self.calls.append(int(x.shape[0]))
        if np.isnan(x).any():
            raise InferenceError("NaN in the batch")
        return {"y": x * 10 + 1 + (100 if raw else 0)}


class Executions:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.timings: list[Timings] = []

    def __call__(self, size: int, timings: Timings) -> None:
        self.sizes.append(size)
        self.timings.append(timings)


def rows(start: int, count: int, width: int = 4) -> np.ndarray:
    return np.arange(start * width, (start + count) * width, dtype=np.float32).reshape(count, width)


class Leases:
    """Counts requests in flight, as a loaded model's leases do, for ``active_requests``."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.batcher: DynamicBatcher | None = None

    def active(self) -> int:
        with self.lock:
            return self.count

    def execute(self, feeds: Feeds, raw: bool) -> Execution:
        assert self.batcher is not None
        with self.lock:
            self.count += 1
        try:
            return self.batcher.execute(feeds, raw)
        finally:
            with self.lock:
                self.count -= 1
            self.batcher.wake()


def call_concurrently(
    batcher: DynamicBatcher, requests: list[tuple[Feeds, bool]], leases: Leases | None = None
) -> list[Execution]:
    if leases is not None:
        leases.batcher = batcher
    execute = leases.execute if leases is not None else batcher.execute
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(execute, feeds, raw) for feeds, raw in requests]
        return [future.result(timeout=60) for future in futures]


def make(
    model: Model, executions: Executions, *, max_batch: int = 8, active: Callable[[], int] | None = None
) -> DynamicBatcher:
    return DynamicBatcher(
        model.run, executions, max_batch=max_batch, max_delay_s=FOREVER, active_requests=active, name="test"
    )


def test_concurrent_callers_share_one_execution_and_get_their_own_rows() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions)
    inputs = [rows(start, count) for start, count in [(0, 1), (10, 2), (20, 3), (30, 1), (40, 1)]]
    try:
        results = call_concurrently(batcher, [({"x": x}, False) for x in inputs])
    finally:
        batcher.close()
    assert model.calls == [8] and executions.sizes == [8]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], x * 10 + 1)
        assert result.batch_size == 8
        assert result.timings.queue_ns >= 0 and result.timings.infer_ns > 0


def test_a_lone_request_does_not_wait_for_company_that_cannot_come() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions, active=lambda: 1)  # waiting would take an hour
    try:
        result = batcher.execute({"x": rows(0, 2)}, False)
    finally:
        batcher.close()
    np.testing.assert_array_equal(result.outputs["y"], rows(0, 2) * 10 + 1)
    assert model.calls == [2]


def test_requests_that_do_not_fit_together_run_separately() -> None:
    model, executions = Model(), Executions()
    leases = Leases()
    batcher = make(model, executions, active=leases.active)
    try:
        requests = [({"x": rows(0, 5)}, False), ({"x": rows(5, 5)}, False)]
        results = call_concurrently(batcher, requests, leases)
    finally:
        batcher.close()
    assert sorted(model.calls) == [5, 5]
    np.testing.assert_array_equal(results[1].outputs["y"], rows(5, 5) * 10 + 1)


@pytest.mark.parametrize(
    "second",
    [
        ({"x": rows(1, 1)}, True),  # raw differs
        ({"x": rows(1, 1, width=3)}, False),  # per-sample shape differs
        ({"x": rows(1, 1).astype(np.float64)}, False),  # dtype differs
    ],
)
def test_incompatible_requests_never_share_a_batch(second: tuple[Feeds, bool]) -> None:
    model, executions = Model(), Executions()
    leases = Leases()
    batcher = make(model, executions, active=leases.active)
    try:
        first, other = call_concurrently(batcher, [({"x": rows(0, 1)}, False), second], leases)
    finally:
        batcher.close()
    assert model.calls == [1, 1]
    np.testing.assert_array_equal(first.outputs["y"], rows(0, 1) * 10 + 1)
    expected = second[0]["x"] * 10 + 1 + (100 if second[1] else 0)
    np.testing.assert_array_equal(other.outputs["y"], expected)


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions, max_batch=4)
    try:
        result = batcher.execute({"x": rows(0, 11)}, False)
    finally:
        batcher.close()
    assert model.calls == [11] and result.outputs["y"].shape == (11, 4)


def test_a_failing_shared_batch_fails_only_the_bad_caller() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions, max_batch=4)
    bad = rows(0, 1)
    bad[0, 2] = np.nan
    inputs = [rows(1, 1), bad, rows(2, 1), rows(3, 1)]
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(batcher.execute, {"x": x}, False) for x in inputs]
            outcomes = [future.exception(timeout=60) or future.result() for future in futures]
    finally:
        batcher.close()
    assert isinstance(outcomes[1], InferenceError)
    for index in (0, 2, 3):
        result = outcomes[index]
        assert isinstance(result, Execution)
        np.testing.assert_array_equal(result.outputs["y"], inputs[index] * 10 + 1)
    assert model.calls[0] == 4 and sorted(model.calls[1:]) == [1, 1, 1, 1]
    assert executions.sizes[0] == 4 and len(executions.sizes) == 5


def test_outputs_without_a_batch_dimension_fall_back_to_one_request_at_a_time() -> None:
    calls: list[int] = []

    def summed(feeds: Feeds, raw: bool) -> Feeds:
        calls.append(int(feeds["x"].shape[0]))
        return {"total": np.asarray(feeds["x"].sum(), dtype=np.float32)}

    executions = Executions()
    batcher = DynamicBatcher(summed, executions, max_batch=2, max_delay_s=FOREVER)
    try:
        results = call_concurrently(batcher, [({"x": rows(0, 1)}, False), ({"x": rows(1, 1)}, False)])
    finally:
        batcher.close()
    assert calls[0] == 2 and sorted(calls[1:]) == [1, 1]
    assert sorted(float(r.outputs["total"]) for r in results) == [
        float(rows(0, 1).sum()),
        float(rows(1, 1).sum()),
    ]


def test_after_close_new_requests_are_refused() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions, active=lambda: 1)
    assert batcher.execute({"x": rows(0, 1)}, False).outputs["y"].shape == (1, 4)
    batcher.close()
    with pytest.raises(ServerUnavailable, match="unloading"):
        batcher.execute({"x": rows(0, 1)}, False)


def test_a_queued_request_is_served_before_close_returns() -> None:
    model, executions = Model(), Executions()
    batcher = make(model, executions, max_batch=4)  # a lone request waits: it is still queued at close
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(batcher.execute, {"x": rows(0, 1)}, False)
        while batcher.pending() == 0:
            threading.Event().wait(0.001)
        assert model.calls == []
        batcher.close()
        np.testing.assert_array_equal(future.result(timeout=60).outputs["y"], rows(0, 1) * 10 + 1)


def test_the_batcher_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(Model().run, Executions(), max_batch=1, max_delay_s=0.001)
    with pytest.raises(ValueError, match="negative"):
        DynamicBatcher(Model().run, Executions(), max_batch=2, max_delay_s=-1)


def test_the_direct_executor_runs_in_the_callers_thread_and_reports_failures() -> None:
    model, executions = Model(), Executions()
    direct = DirectExecutor(model.run, executions)
    result = direct.execute({"x": rows(0, 3)}, False)
    assert result.batch_size == 3 and result.timings.queue_ns == 0
    bad = rows(0, 1)
    bad[0, 0] = np.nan
    with pytest.raises(InferenceError):
        direct.execute({"x": bad}, False)
    assert executions.sizes == [3, 1]


def test_with_two_workers_two_batches_run_at_the_same_time() -> None:
    gate, entered, lock = threading.Event(), [0], threading.Lock()
    both_inside = threading.Event()

    def held(feeds: Feeds, raw: bool) -> Feeds:
        with lock:
            entered[0] += 1
            if entered[0] == 2:
                both_inside.set()
        assert gate.wait(60)
        return {"y": feeds["x"] * 10 + 1}

    executions = Executions()
    batcher = DynamicBatcher(held, executions, max_batch=2, max_delay_s=FOREVER, workers=2)
    inputs = [rows(i, 1) for i in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(batcher.execute, {"x": x}, False) for x in inputs]
            assert both_inside.wait(60)  # the second batch started while the first was still running
            gate.set()
            results = [future.result(timeout=60) for future in futures]
    finally:
        gate.set()
        batcher.close()
    assert sorted(executions.sizes) == [2, 2]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], x * 10 + 1)
