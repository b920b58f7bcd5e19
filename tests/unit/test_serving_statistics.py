"""Per-model statistics: Triton's counting rules, and safety under concurrent recording."""

from __future__ import annotations

import threading

from edge_agent.serving.statistics import Duration, StatisticsRecorder, Timings


def test_successes_failures_and_executions_are_counted_apart() -> None:
    recorder = StatisticsRecorder("m", "1.0.0")
    recorder.executed(4, Timings(input_ns=1, infer_ns=10, output_ns=2))
    recorder.request_succeeded(100, Timings(queue_ns=5, input_ns=1, infer_ns=10, output_ns=2), samples=3)
    recorder.request_succeeded(50, Timings(queue_ns=7, input_ns=1, infer_ns=10, output_ns=2), samples=1)
    recorder.request_failed(30)
    stats = recorder.snapshot()
    assert (stats.name, stats.version) == ("m", "1.0.0")
    assert stats.inference.success == Duration(2, 150)
    assert stats.inference.fail == Duration(1, 30)
    assert stats.inference.queue == Duration(2, 12)
    assert stats.inference.compute_infer == Duration(2, 20)
    assert stats.inference_count == 4 and stats.execution_count == 1
    assert [(b.batch_size, b.compute_infer) for b in stats.batches] == [(4, Duration(1, 10))]
    assert stats.last_inference_ms > 0


def test_batch_statistics_are_kept_per_size_in_order() -> None:
    recorder = StatisticsRecorder("m", "1.0.0")
    for size in (8, 1, 8, 3):
        recorder.executed(size, Timings(infer_ns=size))
    batches = recorder.snapshot().batches
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in batches] == [
        (1, 1, 1),
        (3, 1, 3),
        (8, 2, 16),
    ]


def test_a_fresh_model_has_empty_statistics() -> None:
    stats = StatisticsRecorder("m", "2.0.0").snapshot()
    assert stats.inference.success == Duration() and stats.batches == () and stats.last_inference_ms == 0


def test_concurrent_recording_loses_nothing() -> None:
    recorder = StatisticsRecorder("m", "1.0.0")
    per_thread, threads = 500, 8

    def work() -> None:
        for _ in range(per_thread):
            recorder.request_succeeded(2, Timings(infer_ns=1), samples=2)
            recorder.executed(2, Timings(infer_ns=1))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = recorder.snapshot()
    total = per_thread * threads
    assert stats.inference.success == Duration(total, 2 * total)
    assert stats.inference_count == 2 * total and stats.execution_count == total


def test_negative_durations_never_reduce_a_total() -> None:
    assert Duration(1, 10).plus(-5) == Duration(2, 10)
