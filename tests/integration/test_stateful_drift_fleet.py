"""A scalar-input, state-carrying model's drift windows reach the fleet (issue 12 acceptance).

``TinyVad`` (tests/support/tiny_vad.py: audio ``input`` [N, 64], ``state`` [2, N, 8] with its batch
on axis 1, a scalar ``sr`` int64) is converted by the real converter with ``--state stateN=state``
for ``generic-x86``. A real fleet server (SQLite) listens to a private Mosquitto; three real
``edgefleet agent run`` processes, one device each, serve the bundle over gRPC and report drift
windows. Each device plays eight audio streams in turns through tritonclient, carrying each
stream's state from one of its calls to the next:

- ``vad-plain`` (tag ``stream=plain``): audio like the evaluation set, at 16 kHz: no alert;
- ``vad-rate`` (``stream=rate``): the same audio, at 48 kHz: an alert on ``sr/value``, none on
  the audio's features (quantile bins frozen from a reference that only saw 16 kHz would have put
  48000 in 16000's bin: ``sr`` gets a value histogram);
- ``vad-loud`` (``stream=loud``): four times louder, at 16 kHz: alerts on the audio's columns,
  none on ``sr/value``.

The server watches the three tag cohorts (``--drift-cohort``); the test asks it to evaluate now
rather than waiting for its monitor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from converter import convert
from models.bundle import extract_bundle, generate_keypair, load_public_key
from models.stats import ReferenceStats
from tests.support.agent_process import reporting_agent_command, running_agent
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.sim_devices import count_rows, wait_ingest_ready, wait_until
from tests.support.tiny_vad import (
    HIDDEN,
    INPUTS,
    NAME,
    OUTPUTS,
    STATES,
    TinyVad,
    chunks,
    stream_over_grpc,
    torch_step,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILE = "generic-x86"
FLEET = "lab"
STREAMS = 8  # audio streams per device, taking turns (one chunk of one stream per call)
STEPS = 80  # chunks per stream: 640 calls and samples per device, past the fleet's minimum of 500
WINDOW = 128  # samples per drift window


@dataclass(frozen=True)
class Stream:
    """One device's traffic: its audio gain and sample rate, and the tag that names its cohort."""

    tag: str
    gain: float
    sr: int

    @property
    def device(self) -> str:
        return f"vad-{self.tag}"

    @property
    def cohort(self) -> str:
        return f"tag:stream={self.tag}"


PLAIN, RATE, LOUD = Stream("plain", 1.0, 16000), Stream("rate", 1.0, 48000), Stream("loud", 4.0, 16000)
STREAMS_SENT = (PLAIN, RATE, LOUD)


@dataclass(frozen=True)
class Converted:
    model: TinyVad
    bundle: Path
    public_key: Path
    reference: ReferenceStats


@dataclass
class Fleet:
    server: FleetServer
    converted: Converted
    db_url: str

    def api(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)

    def report(self, cohort: str) -> dict[str, Any]:
        with self.api() as api:
            response = api.get("/api/v1/drift", params={"model": NAME, "cohort": cohort})
        assert response.status_code == 200, response.text
        (only,) = response.json()
        return dict(only)

    def features(self, cohort: str) -> dict[str, dict[str, Any]]:
        return {f["feature"]: f for f in self.report(cohort)["features"]}

    def alerts(self, cohort: str) -> dict[str, dict[str, Any]]:
        with self.api() as api:
            rows = api.get("/api/v1/alerts", params={"model": NAME}).json()
        return {a["feature"]: a for a in rows if a["cohort"] == cohort}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    workdir = tmp_path_factory.mktemp("stateful-drift")
    torch.manual_seed(0)
    model = TinyVad().eval()
    chunk, state = chunks(48, seed=1)
    np.savez(workdir / "calib.npz", input=chunk, state=state, sr=np.array(16000, np.int64))
    chunk, _ = chunks(200, seed=2)  # the reference: one stream of 200 chunks at 16 kHz
    initial = np.zeros((2, 1, HIDDEN), np.float32)
    np.savez(workdir / "eval.npz", input=chunk, state=initial, sr=np.array(16000, np.int64))
    private_key, public_key = generate_keypair(workdir / "keys", "stateful-drift")
    report = convert(
        model,
        [PROFILE],
        workdir / "calib.npz",
        workdir / "eval.npz",
        workdir / "out",
        private_key,
        inputs=INPUTS,
        output_names=OUTPUTS,
        states=STATES,
        precisions=["fp32"],
        name=NAME,
        benchmark_iterations=2,
    )
    (result,) = report.profiles
    assert result.bundle is not None, result.error
    bundle = Path(result.bundle.path)
    extracted = extract_bundle(bundle, workdir / "staged", [load_public_key(public_key)])
    assert extracted.directory is not None
    reference = ReferenceStats.from_dict(
        json.loads((extracted.directory / "reference_stats.json").read_text())
    )
    return Converted(model, bundle, public_key, reference)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, converted: Converted) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("stateful-fleet")
    with ExitStack() as stack:
        broker = MosquittoBroker(workdir=workdir / "mosquitto").start()
        stack.callback(broker.stop)
        cohorts = [arg for stream in STREAMS_SENT for arg in ("--drift-cohort", stream.cohort)]
        server = FleetServer(
            workdir / "server",
            mqtt_url=broker.url,
            trusted_keys=(converted.public_key,),
            extra_args=tuple(cohorts),
        ).start()
        stack.callback(server.stop)
        wait_ingest_ready(server.url)
        fleet = Fleet(server, converted, f"sqlite:///{server.data_dir / 'fleet.db'}")
        _register(fleet)
        for stream in STREAMS_SENT:
            _play(fleet, broker, stream, workdir / stream.device)
        yield fleet


def _register(fleet: Fleet) -> None:
    with fleet.api() as api:
        pushed = api.post(
            "/api/v1/models",
            content=fleet.converted.bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert pushed.status_code == 201, pushed.text
        for stream in STREAMS_SENT:
            created = api.post(
                "/api/v1/devices",
                json={
                    "id": stream.device,
                    "fleet": FLEET,
                    "profile": PROFILE,
                    "tags": {"stream": stream.tag},
                },
            )
            assert created.status_code == 201, created.text


def _play(fleet: Fleet, broker: MosquittoBroker, stream: Stream, workdir: Path) -> None:
    """One agent process, one device: stream over gRPC until the fleet stored every sample."""
    extra = [
        *("--mqtt", broker.url, "--fleet", FLEET, "--device-id", stream.device),
        *("--drift-window", str(WINDOW), "--drift-window-s", "2", "--metrics-interval-s", "1"),
        *("--reconnect-min-s", "0.2", "--reconnect-max-s", "1"),
    ]
    model = fleet.converted.model

    def answers_like_torch(chunk: np.ndarray, state: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        expected = torch_step(model, chunk, state, stream.sr)
        for name in OUTPUTS:
            np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)

    with running_agent(
        [fleet.converted.bundle],
        fleet.converted.public_key,
        workdir,
        extra=extra,
        command=reporting_agent_command(),
    ) as agent:
        sent = stream_over_grpc(
            agent.url, streams=STREAMS, steps=STEPS, sr=stream.sr, gain=stream.gain, check=answers_like_torch
        )
        wait_until(
            lambda: fleet.report(f"device:{stream.device}")["samples"] == sent.requests,
            timeout=90,
            what=f"{sent.requests} samples of {stream.device} stored by the fleet",
        )
    assert "Traceback" not in agent.log(), agent.log()[-4000:]


@pytest.fixture(scope="module")
def evaluated(fleet: Fleet) -> Fleet:
    """The drift monitor's pass, run now (it would run by itself within a minute)."""
    with fleet.api() as api:
        response = api.post("/api/v1/drift/evaluate")
    assert response.status_code == 200, response.text
    return fleet


# --- the reference in the bundle -----------------------------------------------------------------


def test_the_reference_holds_features_for_each_input_kind(converted: Converted) -> None:
    reference = converted.reference
    axes = {t.name: t.batch_axis for t in reference.tensors}
    assert axes == {"input": 0, "state": 1, "sr": None, "prob": 0, "stateN": 1}
    names = set(reference.features)
    # The audio chunk: its columns (16 of 64 sample positions); the state: one mean per unit over
    # its two layers, read along axis 1; no image statistic (projections) for either.
    assert len([n for n in names if n.startswith("input/col[")]) == 16
    assert {f"state/channel_mean[{c}]" for c in range(HIDDEN)} <= names
    assert not [n for n in names if "projection" in n]
    # The sample rate: a value histogram, a bin of its own for 16000 and one each side of it.
    sr = reference.features["sr/value"]
    assert sr.edges[1:-1].tolist() == [15999.5, 16000.5]
    assert sr.counts.tolist() == [0, 200, 0]
    assert sr.moments.mean == 16000.0 and sr.moments.variance == 0.0
    # The reference states are those the stream carried, not the initial zeros.
    state_means = [reference.features[f"state/channel_mean[{c}]"].moments for c in range(HIDDEN)]
    assert max(m.variance for m in state_means) > 0.05


# --- windows reach the fleet ---------------------------------------------------------------------


def test_every_devices_windows_are_stored_with_every_feature_counted_per_sample(fleet: Fleet) -> None:
    devices = [stream.device for stream in STREAMS_SENT]
    # 640 samples in windows of 128, or fewer where the 2 s timer closed one first.
    assert count_rows(fleet.db_url, "drift_windows", devices) >= len(devices) * STEPS * STREAMS // WINDOW
    for stream in STREAMS_SENT:
        report = fleet.report(f"device:{stream.device}")
        assert (report["devices"], report["samples"], report["note"]) == (1, STEPS * STREAMS, None)
        features = {f["feature"]: f for f in report["features"]}
        assert set(features) == set(fleet.converted.reference.features)
        for name, feature in features.items():
            # The scalar too: every sample of a call shares its sample rate.
            assert feature["samples"] == STEPS * STREAMS, name
            assert feature["nonfinite"] == 0, name
            assert np.isfinite([feature["psi"], feature["js"], feature["mean"], feature["std"]]).all(), name
        assert features["sr/value"]["mean"] == stream.sr and features["sr/value"]["std"] == 0.0


def test_the_state_features_follow_what_the_streams_carried(fleet: Fleet) -> None:
    """Louder audio drives the tanh cells towards ±1: the states' spread grows."""
    plain, loud = fleet.features(PLAIN.cohort), fleet.features(LOUD.cohort)
    for c in range(HIDDEN):
        name = f"state/channel_mean[{c}]"
        assert loud[name]["std"] > plain[name]["std"], name


# --- drift judged per cohort ---------------------------------------------------------------------


def test_the_in_distribution_stream_raises_no_drift(evaluated: Fleet) -> None:
    report = evaluated.report(PLAIN.cohort)
    assert report["level"] in ("ok", "warn"), report["level"]
    for feature in report["features"]:
        assert feature["level"] in ("ok", "warn"), feature
        assert feature["psi"] < 0.25, feature
    assert evaluated.alerts(PLAIN.cohort) == {}


def test_a_new_sample_rate_alerts_on_the_sample_rate_and_not_on_the_audio(evaluated: Fleet) -> None:
    alerts = evaluated.alerts(RATE.cohort)
    assert "sr/value" in alerts, sorted(alerts)
    assert alerts["sr/value"]["value"] > 0.25 and alerts["sr/value"]["against"] == "reference"
    assert not [name for name in alerts if name.startswith("input/")], sorted(alerts)
    features = evaluated.features(RATE.cohort)
    assert features["sr/value"]["level"] == "alert" and features["sr/value"]["psi"] > 5


def test_louder_audio_alerts_on_the_audio_columns_and_not_on_the_sample_rate(evaluated: Fleet) -> None:
    alerts = evaluated.alerts(LOUD.cohort)
    columns = [name for name in evaluated.converted.reference.features if name.startswith("input/col[")]
    assert set(columns) <= set(alerts), sorted(alerts)
    assert "sr/value" not in alerts
    features = evaluated.features(LOUD.cohort)
    assert features["sr/value"]["level"] == "ok" and features["sr/value"]["psi"] < 0.01
    # The spread a louder stream shows: about four reference standard deviations.
    assert all(3 < features[name]["std"] / features[name]["baseline_std"] < 5 for name in columns)
