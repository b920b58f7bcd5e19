"""The converter's fp32 against int8 matrix for ``mobilenet-mini``, per runtime, measured side by side.

One ``convert`` call builds the bundles (ONNX Runtime, OpenVINO and LiteRT, each fp32 and int8)
from one profile per cell: ``generic-x86`` with the cell's format and precision, built for
batch 1 (static shapes, what a latency-bound profile such as intel-x86-openvino asks for) and,
for ONNX and OpenVINO, with a dynamic batch for the batched rows. The tolerance is
opened wide, because the network's weights are seeded, not trained, so its top-1 agreement is a
measurement here, not a gate. Each bundle is then verified, extracted and opened the way the
agent opens it (``open_bundle_session``), and the fp32 and int8 sessions of a runtime are timed
in alternating blocks, so that a noisy neighbour slows both alike. Each latency is the median over
rounds of the round's p50; each speed-up is the median over rounds of the ratio of the round's two
back-to-back blocks.

Speed is measured at 1 thread and at the host's core count, and at batch 1 (latency: one request
at a time) and batch 8 (throughput, per sample; not for LiteRT, whose models take one sample).
The configurations answer different questions.
Each call pays a fixed cost outside the layers (shape handling, the Python binding) and, with
several threads, a synchronisation per layer. Both are the same for fp32 and int8, so they take a
larger share of the shorter int8 call; batching spreads them.

Its rows carry no pass/fail target any more: issue 12 retired mobilenet-mini's targets (a
seeded network, not a trained one) in favour of the real-model corpus's, in ``bench_corpus``. It
stays as the reference row, with every thread count and batch. Int8 speed needs the CPU's int8
dot-product instructions (VNNI on x86, dot-product on ARM), so the host's flags are part of the result.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results

MODEL = "mobilenet-mini"
THREAD_COUNTS = tuple(sorted({1, min(os.cpu_count() or 1, 4)}))
BATCHES = (1, 8)
WARMUP = 20
ROUNDS = 40  # alternating fp32/int8 blocks per configuration
CALLS_PER_ROUND = 20  # at batch 1; fewer calls at larger batches, so each block takes about as long
FORMATS = ("onnx", "openvino", "tflite")
RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "LiteRT (XNNPACK)"}
SINGLE_SAMPLE_FORMATS = ("tflite",)
INT8_ISA = ("avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm")


@dataclass(frozen=True)
class Cell:
    """One bundle: a format and precision, built for batch 1 (static shapes) or any batch."""

    format: str
    precision: str
    static: bool = True

    @property
    def profile(self) -> str:
        return f"bench-{self.format}-{self.precision}-{'b1' if self.static else 'dynamic'}"


def _cells() -> list[Cell]:
    """Static batch-1 models for the latency rows; dynamic-batch ones for the batched rows."""
    cells = [Cell(fmt, precision) for fmt in FORMATS for precision in ("fp32", "int8")]
    cells += [
        Cell(fmt, precision, static=False)
        for fmt in FORMATS
        if fmt not in SINGLE_SAMPLE_FORMATS
        for precision in ("fp32", "int8")
    ]
    return cells


CELLS = _cells()


def run() -> list[Path]:
    from converter.benchmark import host_info

    speed_rows: list[list[Any]] = []
    size_rows: list[list[Any]] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-converter-") as tmp:
        root = Path(tmp)
        report, public = _convert(root)
        built = {cell: _extract(report, cell, root, public) for cell in CELLS}
        for fmt in FORMATS:
            fp32, int8 = built[Cell(fmt, "fp32")], built[Cell(fmt, "int8")]
            size = _size_figures(fp32, int8)
            speed = _speed_in_clean_process(built, root / "data" / "eval.npz", fmt)
            figures[fmt] = {"size": size, "speed": speed}
            size_rows.append(_size_row(fmt, size))
            speed_rows += [_speed_row(fmt, figure) for figure in speed]
    host = host_info()
    int8_isa = [f for f in host.features if f in INT8_ISA]
    title = (
        f"converter: {MODEL} fp32 vs int8 speed, warm p50 per sample "
        f"({host.cpu}, {host.cores} cores; int8 dot-product ISA: {', '.join(int8_isa) or 'none'})"
    )
    columns = ["runtime", "threads", "batch", "fp32 ms/sample", "int8 ms/sample", "int8 speed-up"]
    size_columns = ["runtime", "fp32 size", "int8 size", "int8 shrink", "int8 attempt", "int8 cosine"]
    extra = {
        "model": MODEL,
        "thread_counts": list(THREAD_COUNTS),
        "batches": list(BATCHES),
        "rounds": ROUNDS,
        "calls_per_round_at_batch_1": CALLS_PER_ROUND,
        "host_cpu": host.model_dump(),
        "int8_isa": int8_isa,
        "figures": figures,
    }
    size_table = (f"converter: {MODEL} fp32 vs int8 model size", size_columns, size_rows)
    return [write_results("converter", title, columns, speed_rows, extra, more_tables=[size_table])[1]]


def _batches(fmt: str) -> tuple[int, ...]:
    return (1,) if fmt in SINGLE_SAMPLE_FORMATS else BATCHES


@dataclass(frozen=True)
class Built:
    """A verified, extracted bundle and what its report says of the chosen attempt."""

    directory: Path
    size: int
    label: str
    agreement: float | None
    cosine: float


def _extract(report: Any, cell: Cell, root: Path, public: Any) -> Built:
    from models.bundle import extract_bundle

    result = report.profile(cell.profile)
    chosen = result.chosen
    if result.bundle is None or chosen is None or chosen.metrics is None:
        raise RuntimeError(f"{cell.profile}: no bundle ({result.error})")
    directory = root / "extracted" / cell.profile
    manifest = extract_bundle(Path(result.bundle.path), directory, [public]).manifest
    size = sum(e.size for e in manifest.files.values() if e.role in ("model", "weights"))
    return Built(directory, size, chosen.label, chosen.metrics.top1_agreement, chosen.metrics.cosine)


def _size_figures(fp32: Built, int8: Built) -> dict[str, Any]:
    return {
        "fp32_bytes": fp32.size,
        "int8_bytes": int8.size,
        "shrink": fp32.size / int8.size,
        "int8_attempt": int8.label,
        "int8_top1_agreement": int8.agreement,
        "int8_cosine": int8.cosine,
    }


def _size_row(fmt: str, size: dict[str, Any]) -> list[Any]:
    return [
        RUNTIME_NAMES[fmt],
        f"{size['fp32_bytes'] / 1e6:.2f} MB",
        f"{size['int8_bytes'] / 1e6:.2f} MB",
        f"{size['shrink']:.2f}x",
        size["int8_attempt"],
        f"{size['int8_cosine']:.4f}",
    ]


def _speed_in_clean_process(built: dict[Cell, Built], evaluation: Path, fmt: str) -> list[dict[str, Any]]:
    """Time each configuration in a fresh interpreter that loads only the agent's runtime.

    The converter's process has torch, TensorFlow and NNCF loaded, with thread pools and
    allocators of their own; measured here, OpenVINO's int8 model ran 19% slower there than in a
    process of its own, and an agent never loads them. Batch 1 runs the models built for batch 1;
    larger batches run the dynamic-batch ones.
    """
    jobs = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        for threads in THREAD_COUNTS:
            for batch in _batches(fmt):
                fp32, int8 = (built[Cell(fmt, p, static=batch == 1)] for p in ("fp32", "int8"))
                jobs.append(
                    pool.submit(_speed_figures, fp32.directory, int8.directory, evaluation, threads, batch)
                )
        return [job.result() for job in jobs]


def _speed_figures(
    fp32_dir: Path, int8_dir: Path, evaluation: Path, threads: int, batch: int
) -> dict[str, Any]:
    from edge_agent.serving.diagnostics import heavy_modules

    fp32, int8 = (_open(directory, evaluation, threads) for directory in (fp32_dir, int8_dir))
    try:
        timings = _alternate(fp32, int8, batch)
    finally:
        for bundle in (fp32, int8):
            bundle.session.close()
    heavy = heavy_modules(sys.modules)
    if heavy:  # the figures would describe a process no agent runs
        raise RuntimeError(
            f"the timing process loaded {', '.join(heavy[:5])}: it must stay as light as an agent"
        )
    per_sample = {name: _p50(values) / batch for name, values in timings.items()}
    return {
        "threads": threads,
        "batch": batch,
        "fp32_ms_per_sample": per_sample["fp32"],
        "int8_ms_per_sample": per_sample["int8"],
        "speedup": paired_speedup(timings["fp32"], timings["int8"]),
        "provider": int8.session.provider,
    }


def _speed_row(fmt: str, figure: dict[str, Any]) -> list[Any]:
    speedup = figure["speedup"]
    return [
        RUNTIME_NAMES[fmt],
        figure["threads"],
        figure["batch"],
        round(figure["fp32_ms_per_sample"], 3),
        round(figure["int8_ms_per_sample"], 3),
        f"{speedup:.2f}x",
    ]


def paired_speedup(fp32_rounds: list[float], int8_rounds: list[float]) -> float:
    """The median over rounds of fp32 p50 / int8 p50, each round's two blocks timed back to back.

    The host's speed drifts (other tenants, clock changes) over seconds; a ratio of two blocks run
    next to each other cancels that drift, where a ratio of two medians over the whole run does not.
    """
    return float(np.median(np.asarray(fp32_rounds) / np.asarray(int8_rounds)))


def _convert(root: Path) -> tuple[Any, Any]:
    from converter import convert
    from hw_profiles import load_profile
    from hw_profiles.schema import ModelFormat, Precision, Tolerance
    from models.bundle import generate_keypair, load_public_key
    from models.zoo import get_reference

    reference = get_reference(MODEL)
    calib, evaluation = reference.write_data(root / "data")
    key, public = generate_keypair(root / "keys", "bench")
    base = load_profile("generic-x86")
    profiles = [
        base.model_copy(
            update={
                "name": cell.profile,
                # model_copy does not validate: give the enums, not their strings.
                "formats": [ModelFormat(cell.format)],
                "precisions": [Precision(cell.precision)],
                "quantization": base.quantization.model_copy(update={"static_shapes": cell.static}),
            }
        )
        for cell in CELLS
    ]
    report = convert(
        reference.source,
        profiles,
        calib,
        evaluation,
        root / "out",
        key,
        name=MODEL,
        output_names=[reference.output_name],
        # Seeded weights: agreement is measured and reported, never a reason to fall back.
        tolerance=Tolerance(max_accuracy_drop=100.0, min_top1_agreement=0.0, min_cosine=0.0),
        benchmark_iterations=5,
    )
    return report, load_public_key(public)


@dataclass
class OpenBundle:
    session: Any
    samples: dict[str, np.ndarray]


def _open(directory: Path, evaluation: Path, threads: int) -> OpenBundle:
    """Open an extracted bundle as the agent does, with ``threads`` threads."""
    from edge_agent.runtimes import open_bundle_session
    from hw_profiles import load_profile
    from models.bundle import MANIFEST_NAME
    from models.bundle.verify import parse_manifest

    manifest = parse_manifest((directory / MANIFEST_NAME).read_bytes())
    profile = load_profile("generic-x86").model_copy(update={"threads": threads})
    session = open_bundle_session(directory, manifest, profile)
    # The same requests for every bundle: the first evaluation samples (each bundle's golden
    # inputs are picked from its own outputs, so they differ between fp32 and int8).
    with np.load(evaluation) as data:
        samples = {spec.name: data[spec.name][: max(BATCHES)] for spec in manifest.inputs}
    return OpenBundle(session, samples)


def _alternate(fp32: OpenBundle, int8: OpenBundle, batch: int) -> dict[str, list[float]]:
    """Each round's p50 (ms per call of ``batch`` samples) of each, in alternating blocks after a warm-up."""
    runs = {"fp32": fp32, "int8": int8}
    feeds = {name: {k: v[:batch] for k, v in run.samples.items()} for name, run in runs.items()}
    sessions = {name: run.session for name, run in runs.items()}
    return alternate_blocks(sessions, feeds, rounds=ROUNDS, calls=max(CALLS_PER_ROUND // batch, 5))


def alternate_blocks(
    sessions: dict[str, Any],
    feeds: dict[str, dict[str, np.ndarray]],
    *,
    rounds: int,
    calls: int,
    warmup: int = WARMUP,
) -> dict[str, list[float]]:
    """Each round's p50 (ms per call) of each session, in alternating blocks of ``calls`` calls.

    The order flips every round, so neither side always runs first. A burst of load from
    elsewhere on the host lands in one or two rounds; the median over the rounds' p50s leaves it
    out, where one p50 over every call would not. ``bench_corpus`` times its pairs this way too.
    """
    from converter.benchmark import latency_summary

    for name, session in sessions.items():
        for _ in range(warmup):
            session.infer(feeds[name])
    timings: dict[str, list[float]] = {name: [] for name in sessions}
    for round_index in range(rounds):
        order = list(sessions) if round_index % 2 == 0 else list(reversed(sessions))
        for name in order:
            seconds = []
            for _ in range(calls):
                start = time.perf_counter()
                sessions[name].infer(feeds[name])
                seconds.append(time.perf_counter() - start)
            timings[name].append(latency_summary(seconds)[0])
    return timings


def _p50(round_p50s: list[float]) -> float:
    return float(np.median(round_p50s))
