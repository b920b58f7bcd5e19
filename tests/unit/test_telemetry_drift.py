"""Drift windows on the agent: exact window sizes, time-based closing, batching that changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.telemetry.drift import ClosedWindow, DriftAccumulator, DriftMonitor, _Pending, coalesce
from models.stats import DriftWindow, ReferenceStats, build_reference_stats, count_window, merge

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 3)).astype(np.float32)


def _forward(x: np.ndarray) -> np.ndarray:
    return (x @ W).astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> ReferenceStats:
    x = RNG.standard_normal((400, 4)).astype(np.float32)
    return build_reference_stats({"x": x}, {"y": _forward(x)}, layouts={"x": "NC"})


def _batch(n: int, shift: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    x = (RNG.standard_normal((n, 4)) + shift).astype(np.float32)
    return {"x": x}, {"y": _forward(x)}


def _same(a: DriftWindow, b: DriftWindow) -> None:
    assert a.samples == b.samples
    assert a.features.keys() == b.features.keys()
    for name in a.features:
        np.testing.assert_array_equal(a.features[name].counts, b.features[name].counts)
        assert a.features[name].moments.count == b.features[name].moments.count
        assert a.features[name].moments.mean == pytest.approx(b.features[name].moments.mean)
        assert a.features[name].moments.variance == pytest.approx(b.features[name].moments.variance)


def test_windows_hold_exactly_n_samples_even_across_batches(reference: ReferenceStats) -> None:
    accumulator = DriftAccumulator("m", "1", reference, window_samples=10, window_s=1e9)
    inputs, outputs = _batch(25)
    closed = accumulator.add(inputs, outputs, now=100.0)
    assert [c.window.samples for c in closed] == [10, 10]
    assert accumulator.samples == 5
    # The first window is exactly the first ten rows, counted directly.
    _same(closed[0].window, count_window(reference, {"x": inputs["x"][:10]}, {"y": outputs["y"][:10]}))
    tail = accumulator.close(now=101.0)
    assert tail is not None and tail.window.samples == 5
    _same(tail.window, count_window(reference, {"x": inputs["x"][20:]}, {"y": outputs["y"][20:]}))


def test_windows_carry_no_raw_values(reference: ReferenceStats) -> None:
    accumulator = DriftAccumulator("m", "1", reference, window_samples=3, window_s=1e9)
    inputs, outputs = _batch(3)
    (closed,) = accumulator.add(inputs, outputs, now=0.0)
    wire = closed.window.to_dict()
    feature = wire["features"]["x/col[0]"]
    assert set(feature) == {"counts", "nonfinite", "count", "mean", "variance", "min", "max"}
    assert sum(feature["counts"]) == 3
    assert wire["reference"] == reference.fingerprint()


def test_a_window_closes_after_its_time_with_what_it_has(reference: ReferenceStats) -> None:
    accumulator = DriftAccumulator("m", "1", reference, window_samples=1000, window_s=5.0)
    accumulator.add(*_batch(4), now=10.0)
    assert not accumulator.due(14.9)
    assert accumulator.due(15.0)
    closed = accumulator.close(15.0)
    assert closed is not None and (closed.start, closed.end, closed.window.samples) == (10.0, 15.0, 4)
    assert accumulator.close(16.0) is None  # nothing new: no empty window goes out


def test_coalesced_batches_count_exactly_like_single_requests(reference: ReferenceStats) -> None:
    requests = [_batch(n) for n in (1, 1, 3, 1, 2)]
    items = [_Pending(("m", "1"), i, o, len(i["x"]), 0) for i, o in requests]
    joined = coalesce(items)
    assert len(joined) == 1 and joined[0].rows == 8
    direct = count_window(reference, *requests[0])
    for inputs, outputs in requests[1:]:
        direct = merge(direct, count_window(reference, inputs, outputs))
    _same(count_window(reference, joined[0].inputs, joined[0].outputs), direct)


def test_coalesce_keeps_models_and_shapes_apart() -> None:
    a = _Pending(("m", "1"), {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 3), np.float32)}, 1, 0)
    b = _Pending(("m", "2"), {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 3), np.float32)}, 1, 0)
    c = _Pending(("m", "1"), {"x": np.zeros((1, 5), np.float32)}, {"y": np.zeros((1, 3), np.float32)}, 1, 0)
    assert [p.key for p in coalesce([a, a, b, a, c])] == [("m", "1"), ("m", "2"), ("m", "1"), ("m", "1")]


def test_monitor_counts_every_successful_request_of_registered_models(reference: ReferenceStats) -> None:
    closed: list[ClosedWindow] = []
    monitor = DriftMonitor(window_samples=7, window_s=1e9, on_window=closed.append)
    monitor.register("m", "1", reference)
    for _ in range(20):
        inputs, outputs = _batch(1)
        monitor.on_inference("m", "1", inputs, outputs, "OK", 0.001, 0.0, 1)
    inputs, outputs = _batch(1)
    monitor.on_inference("m", "1", inputs, None, "INTERNAL", 0.001, 0.0, 1)  # failed: not counted
    monitor.on_inference("other", "1", inputs, outputs, "OK", 0.001, 0.0, 1)  # no reference: not counted
    assert monitor.process_pending() == 20
    assert [c.window.samples for c in closed] == [7, 7]
    monitor.stop(flush=True)
    assert [c.window.samples for c in closed] == [7, 7, 6]
    assert all((c.model, c.version) == ("m", "1") for c in closed)


def test_monitor_worker_closes_windows_by_time(reference: ReferenceStats) -> None:
    clock = [1000.0]
    closed: list[ClosedWindow] = []
    monitor = DriftMonitor(window_samples=100, window_s=2.0, on_window=closed.append, clock=lambda: clock[0])
    monitor.register("m", "1", reference)
    monitor.on_inference("m", "1", *_batch(3), "OK", 0.001, 0.0, 3)
    monitor.process_pending()
    assert closed == []
    clock[0] += 2.5
    monitor.process_pending()
    assert [c.window.samples for c in closed] == [3]


def test_a_worker_that_falls_behind_skips_and_counts_instead_of_growing(reference: ReferenceStats) -> None:
    monitor = DriftMonitor(window_samples=10, window_s=1e9, on_window=lambda c: None, max_pending_bytes=1000)
    monitor.register("m", "1", reference)
    inputs, outputs = _batch(10)  # 160 + 120 bytes per request
    for _ in range(5):
        monitor.on_inference("m", "1", inputs, outputs, "OK", 0.001, 0.0, 10)
    assert monitor.take_skipped() == 20  # three fit in 1000 bytes, two did not
    assert monitor.process_pending() == 30
    assert monitor.take_skipped() == 0


def test_a_request_that_cannot_be_counted_is_skipped_not_fatal(reference: ReferenceStats) -> None:
    closed: list[ClosedWindow] = []
    monitor = DriftMonitor(window_samples=2, window_s=1e9, on_window=closed.append)
    monitor.register("m", "1", reference)
    text = {"x": np.array([["a", "b", "c", "d"]])}  # not numbers: counting it raises
    monitor.on_inference("m", "1", text, {"y": np.zeros((1, 3), np.float32)}, "OK", 0.0, 0.0, 1)
    monitor.on_inference("m", "1", *_batch(2), "OK", 0.0, 0.0, 2)
    assert monitor.process_pending() == 2
    assert [c.window.samples for c in closed] == [2]
    assert monitor.take_skipped() == 1
