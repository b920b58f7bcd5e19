"""The converter's fp32 against int8 matrix for ``mobilenet-mini``, per runtime, measured side by side.

One ``convert`` call builds the six bundles (ONNX Runtime, OpenVINO and LiteRT, each fp32 and
int8) from one profile per cell: ``generic-x86`` with the cell's format and precision, batch 1
and ``THREADS`` threads. The tolerance is opened wide, because the network's weights are seeded,
not trained, so its top-1 agreement is a measurement here, not a gate. Each bundle is then
verified, extracted and opened the way the agent opens it (``open_bundle_session``), and the fp32
and int8 sessions of a runtime are timed in alternating blocks, so that a noisy neighbour slows
both alike. The ratios (fp32 p50 / int8 p50, fp32 size / int8 size) are what holds across hosts;
the absolute figures are this host's. Each figure is the median over rounds of the round's p50.

Targets on an x86 host (issue 3): int8 at least 1.5x faster than fp32 in ONNX Runtime and 2x in
OpenVINO, and at least 3.5x smaller. Int8 speed needs the CPU's int8 dot-product instructions
(VNNI on x86, dot-product on ARM), so the host's flags are part of the result.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results

MODEL = "mobilenet-mini"
THREADS = 2
WARMUP = 20
ROUNDS = 8  # alternating fp32/int8 blocks per runtime
CALLS_PER_ROUND = 40
FORMATS = ("onnx", "openvino", "tflite")
RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "LiteRT (XNNPACK)"}
TARGET_SPEEDUP = {"onnx": 1.5, "openvino": 2.0}
TARGET_SHRINK = 3.5
INT8_ISA = ("avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm")


@dataclass(frozen=True)
class Cell:
    format: str
    precision: str

    @property
    def profile(self) -> str:
        return f"bench-{self.format}-{self.precision}"


CELLS = [Cell(fmt, precision) for fmt in FORMATS for precision in ("fp32", "int8")]


def run() -> list[Path]:
    from converter.benchmark import host_info

    with tempfile.TemporaryDirectory(prefix="bench-converter-") as tmp:
        root = Path(tmp)
        report, public = _convert(root)
        rows: list[list[Any]] = []
        figures: dict[str, Any] = {}
        for fmt in FORMATS:
            fp32, int8 = (_open(report, Cell(fmt, p), root, public) for p in ("fp32", "int8"))
            try:
                timings = _alternate(fp32, int8)
            finally:
                for bundle in (fp32, int8):
                    bundle.session.close()
            p50 = {name: _p50(values) for name, values in timings.items()}
            speedup, shrink = p50["fp32"] / p50["int8"], fp32.size / int8.size
            figures[fmt] = {
                "fp32_p50_ms": p50["fp32"],
                "int8_p50_ms": p50["int8"],
                "speedup": speedup,
                "fp32_bytes": fp32.size,
                "int8_bytes": int8.size,
                "shrink": shrink,
                "int8_attempt": int8.label,
                "int8_top1_agreement": int8.agreement,
                "int8_cosine": int8.cosine,
                "provider": int8.session.provider,
            }
            rows.append(
                [
                    RUNTIME_NAMES[fmt],
                    round(p50["fp32"], 3),
                    round(p50["int8"], 3),
                    f"{speedup:.2f}x" + _verdict(speedup, TARGET_SPEEDUP.get(fmt)),
                    f"{fp32.size / 1e6:.2f} MB",
                    f"{int8.size / 1e6:.2f} MB",
                    f"{shrink:.2f}x" + _verdict(shrink, TARGET_SHRINK),
                    int8.label,
                    f"{int8.cosine:.4f}",
                ]
            )
    host = host_info()
    int8_isa = [f for f in host.features if f in INT8_ISA]
    title = (
        f"converter: {MODEL} fp32 vs int8, batch 1, {THREADS} threads, warm p50 "
        f"({host.cpu}; int8 dot-product ISA: {', '.join(int8_isa) or 'none'})"
    )
    columns = [
        "runtime",
        "fp32 p50 ms",
        "int8 p50 ms",
        "int8 speed-up",
        "fp32 size",
        "int8 size",
        "int8 shrink",
        "int8 attempt",
        "int8 cosine",
    ]
    extra = {
        "model": MODEL,
        "threads": THREADS,
        "rounds": ROUNDS,
        "calls_per_round": CALLS_PER_ROUND,
        "host_cpu": host.model_dump(),
        "int8_isa": int8_isa,
        "targets": {"speedup": TARGET_SPEEDUP, "shrink": TARGET_SHRINK},
        "figures": figures,
    }
    return [write_results("converter", title, columns, rows, extra)[1]]


def _verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return " (target met)" if value >= target else f" (target {target}x missed)"


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
                "threads": THREADS,
                # Batch 1 everywhere, so each runtime runs the same request shape.
                "quantization": base.quantization.model_copy(update={"static_shapes": True}),
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
    feeds: dict[str, np.ndarray]
    size: int
    label: str
    agreement: float | None
    cosine: float


def _open(report: Any, cell: Cell, root: Path, public: Any) -> OpenBundle:
    from edge_agent.runtimes import open_bundle_session
    from hw_profiles import load_profile
    from models.bundle import extract_bundle

    result = report.profile(cell.profile)
    chosen = result.chosen
    if result.bundle is None or chosen is None or chosen.metrics is None:
        raise RuntimeError(f"{cell.profile}: no bundle ({result.error})")
    directory = root / "extracted" / cell.profile
    manifest = extract_bundle(Path(result.bundle.path), directory, [public]).manifest
    profile = load_profile("generic-x86").model_copy(update={"threads": THREADS})
    session = open_bundle_session(directory, manifest, profile)
    # The same request for every bundle: the first evaluation sample (each bundle's golden inputs
    # are picked from its own outputs, so they differ between fp32 and int8).
    with np.load(root / "data" / "eval.npz") as evaluation:
        feeds = {spec.name: evaluation[spec.name][:1] for spec in manifest.inputs}
    size = sum(e.size for e in manifest.files.values() if e.role in ("model", "weights"))
    return OpenBundle(
        session, feeds, size, chosen.label, chosen.metrics.top1_agreement, chosen.metrics.cosine
    )


def _alternate(fp32: OpenBundle, int8: OpenBundle) -> dict[str, list[float]]:
    """Each round's p50 (ms) of each, timed in alternating blocks after a warm-up.

    A burst of load from elsewhere on the host lands in one or two rounds; the median over the
    rounds' p50s leaves it out, where one p50 over every call would not.
    """
    from converter.benchmark import latency_summary

    runs = {"fp32": fp32, "int8": int8}
    for bundle in runs.values():
        for _ in range(WARMUP):
            bundle.session.infer(bundle.feeds)
    rounds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(ROUNDS):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            session, feeds = runs[name].session, runs[name].feeds
            seconds = []
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                session.infer(feeds)
                seconds.append(time.perf_counter() - start)
            rounds[name].append(latency_summary(seconds)[0])
    return rounds


def _p50(round_p50s: list[float]) -> float:
    return float(np.median(round_p50s))
