"""What telemetry costs: per inference (with and without, side by side), spool writes, replay.

1. Inference path. The same requests through the in-process engine (onnxruntime, batching off)
   without telemetry and with the agent's observer (metrics + drift + fan-out): the difference is
   what a request pays. Drift counting itself runs on the telemetry worker; its cost per sample
   is measured apart, against counting each request inline (what the queue and the coalescing
   save). Two models: a small table (4 → 3) and a small image (3×32×32 → 10, whose drift
   features include random projections).
2. Spool: durable appends per second (metrics-sized payloads), ``synchronous`` FULL and NORMAL.
3. Replay: spooled messages per second to a local Mosquitto once the link comes up.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results

REQUESTS = 2000
REPEATS = 5
ROUNDS = 15
ROUND_REQUESTS = 400
SPOOL_APPENDS = 300
REPLAY_MESSAGES = 3000


# --- a model and its bundle ------------------------------------------------------------------------


def _onnx_model(path: Path, in_shape: list[int], n_out: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod(in_shape[1:]))
    weight = (np.random.default_rng(0).standard_normal((features, n_out)) / np.sqrt(features)).astype(
        np.float32
    )
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _bundle(workdir: Path, name: str, in_shape: list[int], n_out: int, layout: str) -> tuple[Path, Any]:
    from models.bundle import (
        Manifest,
        RuntimeSpec,
        TensorSpec,
        build_manifest_files,
        generate_keypair,
        load_private_key,
        load_public_key,
        pack_bundle,
    )
    from models.stats import build_reference_stats

    source = workdir / name
    source.mkdir()
    model = source / "model.onnx"
    _onnx_model(model, in_shape, n_out)
    x = np.random.default_rng(1).standard_normal((300, *in_shape[1:])).astype(np.float32)
    y = _run_onnx(model, x)
    reference = build_reference_stats({"x": x}, {"y": y}, layouts={"x": layout})
    stats = source / "reference_stats.json"
    stats.write_text(json.dumps(reference.to_dict()))
    key, pub = generate_keypair(workdir / f"{name}-keys")
    manifest = Manifest(
        name=name,
        version="1.0.0",
        profile="generic-x86",
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime"),
        model_file="model.onnx",
        inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, *in_shape[1:]], layout=layout)],
        outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, n_out], layout="NC")],
        files=build_manifest_files(
            {"model.onnx": (model, "model"), "reference_stats.json": (stats, "reference_stats")}
        ),
        reference_stats="reference_stats.json",
    )
    path = pack_bundle(
        workdir / f"{name}.efb",
        manifest,
        {"model.onnx": model, "reference_stats.json": stats},
        load_private_key(key),
    )
    return path, load_public_key(pub)


def _run_onnx(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


# --- 1. the inference path -------------------------------------------------------------------------


def _mean_us(action: Callable[[], object], requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        action()
    return (time.perf_counter() - start) / requests * 1e6


def _per_request_us(action: Callable[[], object], requests: int) -> float:
    """Median over REPEATS of the mean time per request, in µs."""
    return statistics.median(_mean_us(action, requests) for _ in range(REPEATS))


def _paired_us(a: Callable[[], object], b: Callable[[], object]) -> tuple[float, float, float]:
    """A and B in ROUNDS short alternating runs: medians of A, of B, and of the paired B − A.

    On a shared machine the load drifts by more than the effect measured; pairing each B run with
    the A run just before it cancels most of that drift.
    """
    times_a, times_b = [], []
    for _ in range(ROUNDS):
        times_a.append(_mean_us(a, ROUND_REQUESTS))
        times_b.append(_mean_us(b, ROUND_REQUESTS))
    diffs = [tb - ta for ta, tb in zip(times_a, times_b, strict=True)]
    return statistics.median(times_a), statistics.median(times_b), statistics.median(diffs)


def _inference_rows(workdir: Path, name: str, in_shape: list[int], n_out: int, layout: str) -> list[Any]:
    from edge_agent.agent import load_reference
    from edge_agent.serving import BatchingConfig, InferenceEngine, InferRequest, InputTensor
    from edge_agent.telemetry import DriftMonitor, MetricsCollector, ObserverFanOut
    from models.stats import count_window

    bundle, key = _bundle(workdir, name, in_shape, n_out, layout)
    rng = np.random.default_rng(2)
    samples = [rng.standard_normal((1, *in_shape[1:])).astype(np.float32) for _ in range(64)]
    requests = [InferRequest(name, [InputTensor.from_array("x", s)]) for s in samples]
    counter = iter(range(10**9))

    def infer(engine: InferenceEngine) -> Callable[[], object]:
        return lambda: engine.infer(requests[next(counter) % len(requests)])

    control = InferenceEngine.create(
        data_dir=workdir / f"{name}-c", trusted_keys=[key], batching=BatchingConfig(max_batch=1)
    )
    control.install(bundle)
    plain = InferenceEngine.create(
        data_dir=workdir / f"{name}-a", trusted_keys=[key], batching=BatchingConfig(max_batch=1)
    )
    installed = plain.install(bundle)
    observed = InferenceEngine.create(
        data_dir=workdir / f"{name}-b", trusted_keys=[key], batching=BatchingConfig(max_batch=1)
    )
    observed.install(bundle)
    reference = load_reference(installed)
    assert reference is not None
    metrics = MetricsCollector()
    # The worker is not started: requests only queue, and counting is timed apart below. The
    # queue is unbounded here so that no request takes the (cheaper) skip path.
    drift = DriftMonitor(
        window_samples=1000, window_s=1e9, on_window=lambda closed: None, max_pending_bytes=1 << 40
    )
    drift.register(name, "1.0.0", reference)
    fan_out = ObserverFanOut([metrics, drift])
    observed.add_observer(fan_out)
    try:
        for engine in (plain, control, observed):  # warm up
            for _ in range(200):
                infer(engine)()
        drift.process_pending()
        _, _, noise = _paired_us(infer(plain), infer(control))  # two identical engines: the noise floor
        without, with_telemetry, added = _paired_us(infer(plain), infer(observed))
        # Each observed run queued REQUESTS samples for the worker: time counting them.
        start = time.perf_counter()
        counted = drift.process_pending()
        worker_us = (time.perf_counter() - start) / max(counted, 1) * 1e6
    finally:
        for engine in (plain, control, observed):
            engine.close()
    outputs = {"y": np.zeros((1, n_out), np.float32)}
    inline_us = _per_request_us(lambda: count_window(reference, {"x": samples[0]}, outputs), 500)
    observer_us = _per_request_us(
        lambda: fan_out.on_inference(name, "1.0.0", {"x": samples[0]}, outputs, "OK", 0.001, 0.0, 1), REQUESTS
    )
    drift.process_pending()
    return [
        name,
        "×".join(str(d) for d in in_shape[1:]),
        round(without, 1),
        round(with_telemetry, 1),
        round(added, 1),
        round(noise, 1),
        round(observer_us, 2),
        round(worker_us, 1),
        round(observer_us + worker_us, 1),
        round(inline_us, 1),
    ]


# --- 2. spool writes -------------------------------------------------------------------------------


def _spool_rate(workdir: Path, synchronous: str) -> float:
    from edge_agent.telemetry import Spool
    from models.mqtt_contract import Channel

    spool = Spool(workdir / f"spool-{synchronous}.db", synchronous=synchronous)  # type: ignore[arg-type]
    payload = b"x" * 600
    start = time.perf_counter()
    for _ in range(SPOOL_APPENDS):
        spool.append(Channel.METRICS, "edgefleet/v1/default/bench/metrics", lambda seq: payload)
    rate = SPOOL_APPENDS / (time.perf_counter() - start)
    spool.close()
    return rate


# --- 3. replay -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replay_rate(workdir: Path, inflight: int) -> float | None:
    from edge_agent.telemetry import LinkSettings, MqttLink, Spool, parse_mqtt_url
    from edge_agent.telemetry.mqtt_link import LinkCallbacks
    from models.mqtt_contract import Channel

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        return None
    port = _free_port()
    config = workdir / f"mosquitto-{inflight}.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\n"
    )
    broker = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        spool = Spool(workdir / f"replay-{inflight}.db", synchronous="NORMAL")
        payload = b"x" * 600
        with spool.batch() as batch:
            for _ in range(REPLAY_MESSAGES):
                batch.append(Channel.METRICS, "edgefleet/v1/default/bench/metrics", lambda seq: payload)
        link = MqttLink(
            LinkSettings(
                broker=parse_mqtt_url(f"mqtt://127.0.0.1:{port}"), client_id="bench", inflight=inflight
            ),
            spool,
            LinkCallbacks(will=lambda seq: ("edgefleet/v1/default/bench/status", b"")),
        )
        start = time.perf_counter()
        link.start()
        delivered = link.flush(120)
        elapsed = time.perf_counter() - start
        link.stop()
        spool.close()
        return REPLAY_MESSAGES / elapsed if delivered else None
    finally:
        broker.terminate()
        broker.wait()


def run() -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-telemetry-") as tmp:
        workdir = Path(tmp)
        inference = [
            _inference_rows(workdir, "table", [1, 4], 3, "NC"),
            _inference_rows(workdir, "image", [1, 3, 32, 32], 10, "NCHW"),
        ]
        spool_rows = [[mode, round(_spool_rate(workdir, mode))] for mode in ("FULL", "NORMAL")]
        replay_rows = [[inflight, _replay_rate(workdir, inflight)] for inflight in (20, 100)]
    inference_md = write_results(
        "telemetry",
        f"Telemetry cost per inference (µs; end to end: {ROUNDS} paired runs of {ROUND_REQUESTS} requests)",
        [
            "model",
            "input",
            "infer without",
            "infer with telemetry",
            "added (paired)",
            "A/A noise (paired)",
            "observer call alone",
            "drift counting per sample (worker)",
            "total CPU per inference",
            "drift counted inline instead",
        ],
        inference,
        {"rounds": ROUNDS, "round_requests": ROUND_REQUESTS, "repeats": REPEATS, "requests": REQUESTS},
    )[1]
    spool_md = write_results(
        "telemetry_spool",
        f"Spool: durable appends per second ({SPOOL_APPENDS} metrics-sized messages, one commit each)",
        ["synchronous", "appends/s"],
        spool_rows,
        {"appends": SPOOL_APPENDS},
    )[1]
    replay_md = write_results(
        "telemetry_replay",
        f"Replay: {REPLAY_MESSAGES} spooled messages to a local Mosquitto (QoS 1, PUBACK then delete)",
        ["in flight", "messages/s"],
        [[inflight, "mosquitto missing" if rate is None else round(rate)] for inflight, rate in replay_rows],
        {"messages": REPLAY_MESSAGES},
    )[1]
    return [inference_md, spool_md, replay_md]
