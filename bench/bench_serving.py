"""Serving benchmark: the agent over gRPC against the in-process API and a bare gRPC echo, side by side.

For ``digits-cnn`` and ``mobilenet-mini`` as ONNX bundles (ONNX Runtime, one intra-op thread, as the
bundles ask), in one run on one machine:

* p50/p95 latency of one-sample requests, sequential: tritonclient → agent over TCP and over the
  Unix socket (tritonclient hands ``unix:///path`` to grpc unchanged, so it is the same client
  both ways), the in-process call (``LocalInference``, same checks and engine, no transport), and a
  bare grpcio echo server in its own process that receives the same request bytes and answers
  with as many bytes as the agent's response: the transport's floor;
* throughput with 16 concurrent clients (4 client processes × 4 threads, one-sample requests),
  without dynamic batching (``--max-batch 1``), with it (the defaults, ``--max-batch 8
  --batch-delay-ms 2``: one batch at a time), and with two batches allowed to run at once
  (``--batch-workers 2``);
* the agent's resident memory once it is ready and idle, and its cold start: from launching the
  process to its "ready" line (verifying, extracting and loading the bundle included).

Run with ``make bench`` (or ``python -m bench bench_serving``); ``python -m bench.bench_serving
echo ...`` is the echo server's own entry point.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results

MODELS = ("digits-cnn", "mobilenet-mini")
LATENCY_REQUESTS = {"digits-cnn": 400, "mobilenet-mini": 150}
WARMUP_REQUESTS = 20
CLIENTS = 16
CLIENT_PROCESSES = 4
THROUGHPUT_SECONDS = 4.0
ECHO_METHOD = "/bench.Echo/Echo"


@dataclass(frozen=True)
class Percentiles:
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        ordered = sorted(seconds)
        return cls(
            p50_ms=statistics.median(ordered) * 1e3,
            p95_ms=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1e3,
        )


def timed(call: Callable[[], object], requests: int) -> Percentiles:
    for _ in range(WARMUP_REQUESTS):
        call()
    durations = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return Percentiles.of(durations)


# --- the echo server: grpcio and nothing else --------------------------------------------------------


def serve_echo(address: str, response_size: int, ready_file: str) -> None:
    """A grpcio server that answers any request on ECHO_METHOD with ``response_size`` bytes."""
    import grpc

    answer = bytes(response_size)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)}
    )
    limit = 64 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    Path(ready_file).write_text(str(port))
    server.wait_for_termination()


@contextmanager
def echo_server(workdir: Path, response_size: int) -> Iterator[tuple[str, str]]:
    """The echo server in a child process, on TCP and on a Unix socket: yields both targets."""
    import subprocess

    processes = []
    targets = []
    try:
        for kind, address in (("tcp", "127.0.0.1:0"), ("uds", f"unix://{workdir}/echo.sock")):
            ready = workdir / f"echo-{kind}.ready"
            command = [
                sys.executable,
                "-m",
                "bench.bench_serving",
                "echo",
                address,
                str(response_size),
                str(ready),
            ]
            processes.append(subprocess.Popen(command))
            deadline = time.monotonic() + 30
            while not ready.exists():
                if time.monotonic() > deadline or processes[-1].poll() is not None:
                    raise RuntimeError(f"the echo server on {address} did not start")
                time.sleep(0.02)
            targets.append(f"127.0.0.1:{ready.read_text()}" if kind == "tcp" else address)
        yield targets[0], targets[1]
    finally:
        for process in processes:
            process.kill()
            process.wait()


def echo_call(target: str, request: bytes) -> tuple[Callable[[], object], Callable[[], None]]:
    import grpc

    limit = 64 * 1024 * 1024
    channel = grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )
    method = channel.unary_unary(ECHO_METHOD)
    return (lambda: method(request)), channel.close


# --- load generation: client processes with threads --------------------------------------------------


def _client_process(
    url: str, model: str, sample: np.ndarray, threads: int, start_at: float, until: float
) -> int:
    import tritonclient.grpc as triton

    done = [0] * threads

    def loop(index: int) -> None:
        with triton.InferenceServerClient(url) as client:
            tensor = triton.InferInput("input", list(sample.shape), "FP32")
            tensor.set_data_from_numpy(sample)
            client.infer(model, [tensor])  # connect and warm up before the window opens
            while time.time() < start_at:
                time.sleep(0.001)
            while True:
                client.infer(model, [tensor])
                if time.time() > until:
                    return
                done[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done)


def throughput(url: str, model: str, sample: np.ndarray) -> float:
    """Requests per second completed by CLIENTS concurrent clients during THROUGHPUT_SECONDS."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # time for the client processes to start and connect
    until = start_at + THROUGHPUT_SECONDS
    per_process = CLIENTS // CLIENT_PROCESSES
    with futures.ProcessPoolExecutor(CLIENT_PROCESSES, mp_context=context) as pool:
        counts = [
            pool.submit(_client_process, url, model, sample, per_process, start_at, until)
            for _ in range(CLIENT_PROCESSES)
        ]
        total = sum(future.result(timeout=120) for future in counts)
    return total / THROUGHPUT_SECONDS


# --- one model ---------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def bench_model(model: str, workdir: Path) -> dict[str, Any]:
    import tritonclient.grpc as triton

    from edge_agent.api import LocalInference
    from edge_agent.proto import inference_pb2 as pb
    from tests.support.agent_process import start_agent
    from tests.support.digits_bundles import build_in_subprocess

    bundles = build_in_subprocess(workdir / "bundles", model=model, formats=["onnx"])
    bundle, key, name = bundles.path("onnx"), bundles.public_key_path, bundles.name("onnx")
    sample = np.ascontiguousarray(bundles.golden_inputs[:1])
    requests = LATENCY_REQUESTS[model]
    row: dict[str, Any] = {"model": model}

    launched = time.perf_counter()
    agent = start_agent([bundle], key, workdir / "plain", extra=["--max-batch", "1"])
    row["cold_start_s"] = time.perf_counter() - launched
    try:
        time.sleep(1.0)  # let start-up garbage settle before reading the idle footprint
        row["idle_rss_mb"] = rss_mb(agent.pid)
        tensor = triton.InferInput("input", list(sample.shape), "FP32")
        tensor.set_data_from_numpy(sample)
        for transport, url in (("tcp", agent.url), ("uds", agent.uds_url)):
            with triton.InferenceServerClient(url) as client:
                row[f"agent_{transport}"] = timed(partial(client.infer, name, [tensor]), requests)
        with triton.InferenceServerClient(agent.url) as client:
            response_size = len(client.infer(name, [tensor]).get_response().SerializeToString())
        row["throughput_plain"] = throughput(agent.url, name, sample)
        row["busy_rss_mb"] = rss_mb(agent.pid)
    finally:
        agent.stop()

    with LocalInference([bundle], trusted_keys=[key], max_batch=1) as local:
        row["in_process"] = timed(lambda: local.infer(name, {"input": sample}), requests)

    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="input", datatype="FP32", shape=sample.shape)
    request.raw_input_contents.append(sample.tobytes())
    with echo_server(workdir, response_size) as (echo_tcp, echo_uds):
        for transport, target in (("tcp", echo_tcp), ("uds", echo_uds)):
            call, close = echo_call(target, request.SerializeToString())
            row[f"echo_{transport}"] = timed(call, requests)
            close()

    for label, extra in (("throughput_batched", []), ("throughput_batched_2", ["--batch-workers", "2"])):
        agent = start_agent([bundle], key, workdir / label, extra=extra)  # --max-batch 8 --batch-delay-ms 2
        try:
            row[label] = throughput(agent.url, name, sample)
        finally:
            agent.stop()
    row["request_bytes"] = len(request.SerializeToString())
    row["response_bytes"] = response_size
    return row


def run() -> list[Path]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for model in MODELS:
            rows.append(bench_model(model, Path(tmp) / model))

    latency_columns = ["model", "path", "p50 ms", "p95 ms", "vs in-process p50"]
    paths = [("agent_tcp", "tritonclient → agent, TCP"), ("agent_uds", "tritonclient → agent, Unix socket")]
    paths += [("in_process", "in-process API"), ("echo_tcp", "bare grpcio echo, TCP")]
    paths += [("echo_uds", "bare grpcio echo, Unix socket")]
    latency_rows = [
        [
            row["model"],
            label,
            row[key].p50_ms,
            row[key].p95_ms,
            f"{row[key].p50_ms / row['in_process'].p50_ms:.2f}x",
        ]
        for row in rows
        for key, label in paths
    ]
    capacity_columns = [
        "model",
        f"req/s, {CLIENTS} clients, no batching",
        f"req/s, {CLIENTS} clients, dynamic batching",
        f"req/s, {CLIENTS} clients, batching, 2 workers",
        "idle RSS MB",
        "RSS after load MB",
        "cold start s",
        "request / response bytes",
    ]
    capacity_rows = [
        [
            row["model"],
            row["throughput_plain"],
            row["throughput_batched"],
            row["throughput_batched_2"],
            row["idle_rss_mb"],
            row["busy_rss_mb"],
            row["cold_start_s"],
            f"{row['request_bytes']} / {row['response_bytes']}",
        ]
        for row in rows
    ]
    extra = {"latency_requests": LATENCY_REQUESTS, "warmup": WARMUP_REQUESTS, "clients": CLIENTS}
    _, latency_md = write_results(
        "serving_latency",
        "Serving latency, one-sample requests (ONNX Runtime, 1 thread)",
        latency_columns,
        latency_rows,
        extra,
    )
    _, capacity_md = write_results(
        "serving_capacity",
        "Serving throughput, memory and cold start (ONNX Runtime, 1 thread)",
        capacity_columns,
        capacity_rows,
        extra,
    )
    return [latency_md, capacity_md]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "echo":
        serve_echo(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        for path in run():
            print(path.read_text())
