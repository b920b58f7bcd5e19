"""Any input and output signature (issue 12, part 2): the grammar, the manifest, the batch loop, the data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter.data import check_dataset, join_batches, run_sequence, samples_first, spread_initial_states
from converter.errors import ConversionError
from converter.signature import (
    concrete_shape,
    pair_states,
    parse_input_spec,
    parse_state_pairs,
    spec_text,
    with_batch,
)
from edge_agent.runtimes import InvalidInput
from edge_agent.runtimes.base import loops_over_batch
from edge_agent.runtimes.feeds import join_samples, prepare_feeds, split_batch
from edge_agent.runtimes.session import BaseSession
from edge_agent.serving.validation import contract
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import TensorSpec
from models.stats import ReferenceStats, build_reference_stats, count_window

# --- the --input grammar -----------------------------------------------------------------------


def _parsed(text: str) -> tuple[list[int], int | None, str]:
    spec = parse_input_spec(text)
    return spec.shape, spec.batch_axis, spec.dtype


def test_an_empty_shape_is_a_scalar() -> None:
    assert _parsed("sr::int64") == ([], None, "int64")


def test_n_marks_the_batch_axis_wherever_it_is() -> None:
    assert _parsed("state:2xNx128:float32") == ([2, -1, 128], 1, "float32")
    assert _parsed("x:8xbatch:float32") == ([8, -1], 1, "float32")
    assert _parsed("x:3x?xN:float32") == ([3, -1, -1], 2, "float32")


def test_existing_forms_keep_their_batch_on_axis_0() -> None:
    assert _parsed("input:1x3x224x224:float32") == ([1, 3, 224, 224], 0, "float32")
    assert _parsed("input:Nx3x224x224:float32") == ([-1, 3, 224, 224], 0, "float32")
    assert _parsed("ids:?x32:int64") == ([-1, 32], 0, "int64")
    assert _parsed("ids:-1x32:int64") == ([-1, 32], 0, "int64")
    assert parse_input_spec("input:Nx3x8x8:float32:NCHW").layout == "NCHW"


def test_a_fixed_shape_without_n_has_no_batch_axis() -> None:
    assert _parsed("state:2x1x128:float32") == ([2, 1, 128], None, "float32")
    assert _parsed("table:10:float32") == ([10], None, "float32")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("state:NxNx128:float32", "one batch axis"),
        ("x:Nx3xB:float32", "one batch axis"),
        ("sr::", "expected name:shape:dtype"),
        (":3:float32", "expected name:shape:dtype"),
        ("x:3:complex64", "dtype"),
        ("x:0x3:float32", "positive"),
        ("x:3xfoo:float32", "not like"),
    ],
)
def test_bad_specs_say_what_a_good_one_looks_like(text: str, why: str) -> None:
    with pytest.raises(ConversionError) as caught:
        parse_input_spec(text)
    assert why in str(caught.value)
    assert "sr::int64" in (caught.value.hint or "")


def test_the_batch_goes_on_the_batch_axis() -> None:
    state = parse_input_spec("state:2xNx128:float32")
    assert concrete_shape(state, 3) == (2, 3, 128)
    assert with_batch(state, 1).shape == [2, 1, 128]
    assert with_batch(state, 1).batch_axis == 1
    scalar = parse_input_spec("sr::int64")
    assert concrete_shape(scalar, 4) == () and with_batch(scalar, 1).shape == []
    fixed = parse_input_spec("table:2x5:float32")
    assert concrete_shape(fixed, 4) == (2, 5)
    assert spec_text(state) == "2xNx128" and spec_text(scalar) == ""


# --- the manifest ------------------------------------------------------------------------------


def test_an_existing_manifests_tensor_parses_and_means_the_same() -> None:
    old = {"name": "x", "dtype": "float32", "shape": [-1, 3, 8, 8], "layout": "NCHW", "quantization": None}
    spec = TensorSpec.model_validate(old)
    assert spec.batch_axis == 0 and spec.has_dynamic_batch and spec.batch_size == -1
    assert spec.model_dump(mode="json") == old  # signs to the same bytes as before
    static = TensorSpec.model_validate({**old, "shape": [1, 4]})
    assert static.batch_axis == 0 and static.batch_size == 1
    scalar = TensorSpec.model_validate({**old, "shape": []})
    assert scalar.batch_axis is None and not scalar.has_dynamic_batch
    assert "batch_axis" not in scalar.model_dump(mode="json")


def test_a_batch_axis_elsewhere_or_none_round_trips() -> None:
    state = TensorSpec(name="state", dtype="float32", shape=[2, -1, 8], batch_axis=1)
    dumped = json.loads(state.model_dump_json())
    assert dumped["batch_axis"] == 1
    assert TensorSpec.model_validate(dumped) == state
    fixed = TensorSpec(name="t", dtype="float32", shape=[2, 5], batch_axis=None)
    dumped = json.loads(fixed.model_dump_json())
    assert dumped["batch_axis"] is None
    assert TensorSpec.model_validate(dumped).batch_axis is None
    paired = TensorSpec(name="stateN", dtype="float32", shape=[2, 1, 8], batch_axis=1, state_for="state")
    assert TensorSpec.model_validate(json.loads(paired.model_dump_json())).state_for == "state"


def test_a_batch_axis_outside_the_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="not an axis"):
        TensorSpec(name="x", dtype="float32", shape=[2, 3], batch_axis=2)
    with pytest.raises(ValueError, match="not an axis"):
        TensorSpec(name="sr", dtype="int64", shape=[], batch_axis=0)


def test_the_client_contract_knows_the_batch_axis() -> None:
    state = TensorSpec(name="state", dtype="float32", shape=[2, -1, 8], batch_axis=1)
    assert contract(state, raw=False).has_dynamic_batch
    assert not contract(TensorSpec(name="sr", dtype="int64", shape=[]), raw=False).has_dynamic_batch


# --- the agent's feeds and batch loop ---------------------------------------------------------

INPUT = TensorSpec(name="input", dtype="float32", shape=[1, 4])
STATE = TensorSpec(name="state", dtype="float32", shape=[2, 1, 3], batch_axis=1)
SR = TensorSpec(name="sr", dtype="int64", shape=[])
PROB = TensorSpec(name="prob", dtype="float32", shape=[1, 1])
STATE_N = TensorSpec(name="stateN", dtype="float32", shape=[2, 1, 3], batch_axis=1)


def test_a_static_batch_of_one_on_axis_1_takes_any_batch_there_only() -> None:
    assert loops_over_batch([STATE])
    assert not loops_over_batch([SR, TensorSpec(name="t", dtype="float32", shape=[1, 3], batch_axis=None)])
    feeds = {"input": np.zeros((3, 4), np.float32), "state": np.zeros((2, 3, 3)), "sr": 16000}
    prepared, batch = prepare_feeds([INPUT, STATE, SR], feeds, raw=False, batch_loop=True)
    assert batch == 3
    assert prepared["sr"].shape == () and prepared["sr"].dtype == np.int64
    with pytest.raises(InvalidInput, match="dimension 0 must be 2"):
        prepare_feeds([STATE], {"state": np.zeros((3, 1, 3))}, raw=False, batch_loop=True)
    with pytest.raises(InvalidInput, match="different batch sizes"):
        prepare_feeds(
            [INPUT, STATE],
            {"input": np.zeros((3, 4), np.float32), "state": np.zeros((2, 2, 3), np.float32)},
            raw=False,
            batch_loop=True,
        )


def test_samples_split_and_join_along_each_tensors_axis() -> None:
    state = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    feeds = {"input": np.zeros((3, 4), np.float32), "state": state, "sr": np.array(8000)}
    second = split_batch([INPUT, STATE, SR], feeds, 1)
    assert second["state"].shape == (2, 1, 3)
    np.testing.assert_array_equal(second["state"][:, 0], state[:, 1])
    assert second["sr"].shape == ()  # broadcast to every sample, not split
    assert second["input"].shape == (1, 4)
    parts = [split_batch([STATE], {"state": state}, i) for i in range(3)]
    np.testing.assert_array_equal(join_samples([STATE], parts)["state"], state)


class _Recurrence(BaseSession):
    """A real session over numpy: a static batch of 1, state on axis 1, a scalar that scales."""

    runtime = RuntimeName.ONNXRUNTIME

    def __init__(self) -> None:
        super().__init__(
            model_path=Path("recurrence.npy"),
            inputs=[INPUT, STATE, SR],
            outputs=[PROB, STATE_N],
            provider="numpy",
            fallbacks=[],
            threads=1,
        )
        self.calls: list[dict[str, tuple[int, ...]]] = []

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append({name: value.shape for name, value in feeds.items()})
        assert (
            feeds["input"].shape == (1, 4) and feeds["state"].shape == (2, 1, 3) and feeds["sr"].shape == ()
        )
        return _recurrence(feeds)


def _recurrence(feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    scale = np.float32(feeds["sr"]) / np.float32(16000)
    new = np.tanh(feeds["state"] + scale * feeds["input"][:, :3]).astype(np.float32)
    return {"prob": new.sum(axis=(0, 2))[:, None], "stateN": new}


def test_the_session_loops_a_batch_of_three_along_the_state_axis() -> None:
    rng = np.random.default_rng(0)
    feeds = {
        "input": rng.standard_normal((3, 4)).astype(np.float32),
        "state": rng.standard_normal((2, 3, 3)).astype(np.float32),
        "sr": np.array(8000, np.int64),
    }
    with _Recurrence() as session:
        out = session.infer(feeds)
        assert len(session.calls) == 3
    expected = _recurrence(feeds)  # the recurrence is per sample, so the whole batch at once agrees
    assert out["stateN"].shape == (2, 3, 3) and out["prob"].shape == (3, 1)
    np.testing.assert_allclose(out["stateN"], expected["stateN"], rtol=1e-6)
    np.testing.assert_allclose(out["prob"], expected["prob"], rtol=1e-6)


# --- the converter's data ---------------------------------------------------------------------

DYN_INPUT = TensorSpec(name="input", dtype="float32", shape=[-1, 4])
DYN_STATE = TensorSpec(name="state", dtype="float32", shape=[2, -1, 3], batch_axis=1)


def _arrays(count: int, sr: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "input": rng.standard_normal((count, 4)).astype(np.float32),
        "state": rng.standard_normal((2, count, 3)).astype(np.float32),
        "sr": sr,
    }


def test_data_counts_samples_on_each_inputs_batch_axis_and_shares_a_scalar() -> None:
    data = check_dataset(
        _arrays(5, np.array(16000, np.int64)), [DYN_INPUT, DYN_STATE, SR], role="t", source="s"
    )
    assert data.size == 5 and data.axis("state") == 1 and data.axis("sr") is None
    batches = list(data.batches(2))
    assert [b["state"].shape for b in batches] == [(2, 2, 3), (2, 2, 3), (2, 1, 3)]
    assert all(b["sr"].shape == () for b in batches)
    assert data.samples_first("state").shape == (5, 2, 3)
    assert data.samples_first("sr").shape == (5,)
    picked = data.select(np.array([4, 0]))
    np.testing.assert_array_equal(picked.inputs["state"], data.inputs["state"][:, [4, 0]])


def test_a_per_sample_scalar_never_mixes_values_in_a_batch() -> None:
    rates = np.array([16000, 16000, 16000, 8000, 8000], np.int64)
    data = check_dataset(_arrays(5, rates), [DYN_INPUT, DYN_STATE, SR], role="t", source="s")
    assert data.fixed == frozenset({"sr"})
    assert list(data.spans(4)) == [(0, 3), (3, 5)]
    assert [int(b["sr"]) for b in data.batches(4)] == [16000, 8000]
    assert all(b["sr"].ndim == 0 for b in data.batches(4))


def test_wrong_data_is_refused_with_the_batch_axis_named() -> None:
    arrays = _arrays(5, np.array(16000, np.int64))
    arrays["state"] = np.zeros((5, 2, 3), np.float32)  # samples first, but the input counts them on axis 1
    with pytest.raises(ConversionError, match="axis 0 should be 2") as caught:
        check_dataset(arrays, [DYN_INPUT, DYN_STATE, SR], role="evaluation", source="e.npz")
    assert "samples on axis 1" in str(caught.value)
    arrays = _arrays(5, np.zeros((5, 2), np.int64))
    with pytest.raises(ConversionError, match="no batch axis"):
        check_dataset(arrays, [DYN_INPUT, DYN_STATE, SR], role="evaluation", source="e.npz")
    arrays = _arrays(5, np.array(16000, np.int64))
    arrays["input"] = arrays["input"][:4]
    with pytest.raises(ConversionError, match="different sample counts"):
        check_dataset(arrays, [DYN_INPUT, DYN_STATE, SR], role="evaluation", source="e.npz")


def test_outputs_join_along_their_batch_axis() -> None:
    parts = [
        {"stateN": np.zeros((2, 2, 3)), "prob": np.zeros((2, 1))},
        {"stateN": np.ones((2, 1, 3)), "prob": np.ones((1, 1))},
    ]
    joined = join_batches(parts, [PROB, STATE_N])
    assert joined["stateN"].shape == (2, 3, 3) and joined["prob"].shape == (3, 1)
    assert samples_first(joined, [PROB, STATE_N])["stateN"].shape == (3, 2, 3)


# --- drift features ---------------------------------------------------------------------------


def test_drift_reads_a_state_by_its_batch_axis_and_a_scalar_once_per_sample_sharing_it() -> None:
    rng = np.random.default_rng(2)
    state = rng.standard_normal((40, 2, 3)).astype(np.float32)  # samples first, as the converter gives
    sr = np.full(40, 16000, np.int64)
    reference = build_reference_stats({"state": state, "sr": sr}, {}, batch_axes={"state": 1, "sr": None})
    again = ReferenceStats.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again.fingerprint() == reference.fingerprint()
    assert {t.name: t.batch_axis for t in again.tensors} == {"state": 1, "sr": None}
    served = np.moveaxis(state[:6], 0, 1)  # [2, 6, 3], as a client sends it
    window = count_window(again, {"state": served, "sr": np.array(16000)})
    assert window.samples == 6
    assert sum(window.features["sr/value"].counts) == 6  # the six samples share the one rate
    assert sum(next(c for n, c in window.features.items() if n.startswith("state/")).counts) == 6


def test_a_reference_without_batch_axes_keeps_its_fingerprint() -> None:
    x = np.random.default_rng(3).standard_normal((30, 4)).astype(np.float32)
    plain = build_reference_stats({"x": x}, {})
    assert "batch_axis" not in json.dumps(plain.to_dict())


# --- recurrent state --------------------------------------------------------------------------


def test_state_pairs_parse_and_check_against_the_signature() -> None:
    assert parse_state_pairs(["stateN=state"]) == {"stateN": "state"}
    assert parse_state_pairs({"h": "h0"}) == {"h": "h0"} and parse_state_pairs(None) == {}
    with pytest.raises(ConversionError, match="expected OUTPUT=INPUT"):
        parse_state_pairs(["stateN"])
    source_out = TensorSpec(name="stateN", dtype="float32", shape=[2, -1, 3], batch_axis=0)
    paired = pair_states([DYN_INPUT, DYN_STATE, SR], [source_out], {"stateN": "state"})
    assert paired[0].state_for == "state" and paired[0].batch_axis == 1
    for pairs, why in [
        ({"nope": "state"}, "no output 'nope'"),
        ({"stateN": "nope"}, "no input 'nope'"),
        ({"stateN": "sr"}, "cannot feed input 'sr'"),
    ]:
        with pytest.raises(ConversionError, match=why):
            pair_states([DYN_INPUT, DYN_STATE, SR], [source_out], pairs)


def test_a_stream_runs_in_order_carrying_the_state() -> None:
    arrays = _arrays(4, np.array(16000, np.int64))
    arrays["state"] = np.zeros((2, 1, 3), np.float32)  # the initial state only
    arrays = spread_initial_states(arrays, [DYN_INPUT, DYN_STATE, SR], {"state"})
    assert arrays["state"].shape == (2, 4, 3)
    data = check_dataset(arrays, [DYN_INPUT, DYN_STATE, SR], role="t", source="s")
    dyn_state_n = STATE_N.model_copy(update={"shape": [2, -1, 3], "state_for": "state"})
    calls: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feeds["state"].shape[1])
        return _recurrence(feeds)

    streamed, outputs = run_sequence(run, data, {"stateN": "state"}, [PROB, dyn_state_n])
    assert calls == [1, 1, 1, 1]
    state = np.zeros((2, 1, 3), np.float32)
    for step in range(4):
        np.testing.assert_allclose(streamed.inputs["state"][:, step : step + 1], state)
        state = _recurrence({"input": arrays["input"][step : step + 1], "state": state, "sr": 16000})[
            "stateN"
        ]
        np.testing.assert_allclose(outputs["stateN"][:, step : step + 1], state, rtol=1e-6)
    assert outputs["prob"].shape == (4, 1)
    # Each sample now runs on its own and gives the same answer as the stream.
    again = _recurrence(next(streamed.batches(4)))
    np.testing.assert_allclose(again["stateN"], outputs["stateN"], rtol=1e-6)


def test_the_agents_drift_monitor_counts_a_stateful_request_by_its_batch_axes() -> None:
    from edge_agent.telemetry.drift import DriftAccumulator

    rng = np.random.default_rng(4)
    reference = build_reference_stats(
        {
            "input": rng.standard_normal((40, 4)).astype(np.float32),
            "state": rng.standard_normal((40, 2, 3)).astype(np.float32),
            "sr": np.full(40, 16000, np.int64),
        },
        {},
        batch_axes={"state": 1, "sr": None},
    )
    accumulator = DriftAccumulator("vad", "1.0.0", reference, window_samples=4, window_s=60)
    assert not accumulator.batch_first
    request = {
        "input": np.zeros((1, 4), np.float32),
        "state": np.zeros((2, 1, 3), np.float32),
        "sr": np.array(16000, np.int64),
    }
    closed = [w for _ in range(4) for w in accumulator.add(request, {}, now=1.0)]
    assert len(closed) == 1 and closed[0].window.samples == 4


def test_token_ids_get_a_coarse_token_histogram() -> None:
    from models.stats.features import TOKEN_BANDS, extract_features

    ids = np.array([[0, 0, 5, 300, 20000], [1, 2, 3, 4, 5]], np.int64)
    features = extract_features("ids", ids)
    shares = np.stack([features[f"ids/token_share[{b}]"].values for b in range(len(TOKEN_BANDS) + 1)])
    np.testing.assert_allclose(shares.sum(axis=0), 1.0)
    np.testing.assert_allclose(shares[:, 0], [0.4, 0.2, 0, 0.2, 0, 0, 0.2])
    assert "ids/col[0]" in features  # the per-position values stay
    assert not any("token_share" in name for name in extract_features("x", ids.astype(np.float32)))
