"""Per-model request metrics: counts per window, errors by code, batch sizes, queue depth."""

from __future__ import annotations

import threading

import numpy as np

from edge_agent.telemetry.metrics import MAX_MODELS, OVERFLOW_MODEL, MetricsCollector
from edge_agent.telemetry.observer import ObserverFanOut

X = {"x": np.zeros((1, 4), np.float32)}
Y = {"y": np.zeros((1, 3), np.float32)}


def _observe(
    collector: MetricsCollector, model: str = "m", status: str = "OK", latency_ms: float = 2.0, batch: int = 1
) -> None:
    collector.on_inference(
        model, "1.0.0", X, Y if status == "OK" else None, status, latency_ms / 1000, 0.0, batch
    )


def test_a_window_counts_requests_errors_and_batches() -> None:
    collector = MetricsCollector()
    for latency in (1.0, 2.0, 3.0, 4.0):
        _observe(collector, latency_ms=latency, batch=4)
    _observe(collector, status="INVALID_ARGUMENT", batch=0)
    _observe(collector, status="INVALID_ARGUMENT", batch=0)
    _observe(collector, status="INTERNAL", batch=1)
    (row,) = collector.take()
    assert (row.model, row.version, row.requests) == ("m", "1.0.0", 7)
    assert row.errors == {"INTERNAL": 1, "INVALID_ARGUMENT": 2}
    assert row.batch_sizes == {"1": 1, "4": 4}
    assert sum(row.latency.bucket_counts) == 4  # the successful requests
    assert row.latency.p50_ms is not None and 1.0 <= row.latency.p50_ms <= 4.0


def test_take_starts_a_new_window() -> None:
    collector = MetricsCollector()
    _observe(collector)
    assert collector.take()[0].requests == 1
    assert collector.take() == []


def test_loaded_models_without_traffic_get_zero_rows() -> None:
    collector = MetricsCollector()
    _observe(collector, model="busy")
    rows = {row.model: row for row in collector.take([("busy", "1.0.0"), ("idle", "2.0.0")])}
    assert rows["busy"].requests == 1
    assert rows["idle"].requests == 0 and rows["idle"].version == "2.0.0"


def test_queue_depth_keeps_the_window_maximum() -> None:
    collector = MetricsCollector()
    for depth in (2, 7, 3):
        collector.note_queue_depth({("m", "1.0.0"): depth})
    assert collector.take()[0].queue_depth_max == 7


def test_too_many_model_names_are_folded_into_one_row() -> None:
    collector = MetricsCollector()
    for i in range(MAX_MODELS + 10):
        _observe(collector, model=f"typo-{i}", status="NOT_FOUND")
    rows = collector.take()
    assert len(rows) == MAX_MODELS + 1
    overflow = next(row for row in rows if row.model == OVERFLOW_MODEL)
    assert overflow.requests == 10
    assert sum(row.requests for row in rows) == MAX_MODELS + 10


def test_concurrent_requests_are_all_counted() -> None:
    collector = MetricsCollector()
    taken: list[int] = []

    def serve() -> None:
        for _ in range(2000):
            _observe(collector)

    def report() -> None:
        for _ in range(50):
            taken.extend(row.requests for row in collector.take())

    threads = [threading.Thread(target=serve) for _ in range(4)] + [threading.Thread(target=report)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken.extend(row.requests for row in collector.take())
    assert sum(taken) == 8000  # no request lost or counted twice between windows


def test_fan_out_shields_the_inference_path_from_a_failing_observer() -> None:
    class Broken:
        def on_inference(self, *args: object) -> None:
            raise RuntimeError("bug")

    collector = MetricsCollector()
    fan_out = ObserverFanOut([Broken(), collector])
    fan_out.on_inference("m", "1.0.0", X, Y, "OK", 0.001, 0.0, 1)
    assert fan_out.failures == 1
    assert collector.take()[0].requests == 1
