"""The samples a served request counts: along each input's own batch axis (edge_agent.serving.engine)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from edge_agent.serving.engine import _request_samples
from models.bundle.manifest import TensorSpec


def _model(*inputs: TensorSpec) -> Any:
    return SimpleNamespace(installed=SimpleNamespace(manifest=SimpleNamespace(inputs=list(inputs))))


STATEFUL = _model(
    TensorSpec(name="input", dtype="float32", shape=[-1, 64]),
    TensorSpec(name="state", dtype="float32", shape=[2, -1, 8], batch_axis=1),
    TensorSpec(name="sr", dtype="int64", shape=[]),
)


def test_a_state_counts_its_samples_on_axis_1_and_a_scalar_none() -> None:
    feeds: dict[str, np.ndarray] = {
        "input": np.zeros((3, 64), np.float32),
        "state": np.zeros((2, 3, 8), np.float32),
        "sr": np.array(16000, np.int64),
    }
    assert _request_samples(STATEFUL, feeds) == 3


def test_the_state_alone_is_not_read_on_axis_0() -> None:
    only_state = _model(TensorSpec(name="state", dtype="float32", shape=[2, -1, 8], batch_axis=1))
    assert _request_samples(only_state, {"state": np.zeros((2, 5, 8), np.float32)}) == 5


def test_inputs_without_a_batch_axis_count_one_sample() -> None:
    fixed = _model(TensorSpec(name="sr", dtype="int64", shape=[]))
    assert _request_samples(fixed, {"sr": np.array(8000, np.int64)}) == 1
