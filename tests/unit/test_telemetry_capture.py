"""Opt-in raw capture: rate-limited, written whole, pruned oldest first, local only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.telemetry.capture import CaptureSettings, RawCapture, TokenBucket, prune_oldest

X = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
Y = {"y": np.ones((2, 3), np.float32)}


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.5)
    assert bucket.take(1.0)  # a second later: one more token
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_token_bucket_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=0.0, burst=1)


def test_capture_is_rate_limited_and_writes_inputs_and_outputs(tmp_path: Path) -> None:
    clock = [0.0]
    capture = RawCapture(CaptureSettings(tmp_path, per_minute=60.0, burst=2), clock=lambda: clock[0])
    for _ in range(5):
        capture.on_inference("digits", "1.0.0", X, Y, "OK", 0.001, 0.0, 2)
    capture.on_inference("digits", "1.0.0", X, None, "INTERNAL", 0.001, 0.0, 2)  # failures are not kept
    capture.start()
    capture.stop()
    files = sorted((tmp_path / "digits" / "1.0.0").glob("*.npz"))
    assert len(files) == 2  # the burst; the rest was over the rate
    with np.load(files[0]) as saved:
        np.testing.assert_array_equal(saved["input.x"], X["x"])
        np.testing.assert_array_equal(saved["output.y"], Y["y"])
    assert not list(tmp_path.rglob("*.part"))


def test_prune_deletes_the_oldest_files_first(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.npz"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    assert prune_oldest(tmp_path, max_bytes=2500) == 3
    assert [p.exists() for p in paths] == [False, False, False, True, True]
