"""The converter: from a trained model to one signed, validated bundle per hardware profile.

    from converter import convert
    report = convert("models.zoo.digits_cnn:trained_model", ["raspberry-pi-5"],
                     "calib.npz", "eval.npz", "out/", "keys/edgefleet.key")

Sources: a PyTorch module (or factory, ``.pt2``, TorchScript), an ONNX file, a Keras model or a
TensorFlow SavedModel directory. Steps (``converter.passes``): load → plan → export → quantize →
validate → benchmark → package. Planning (``converter.planning``) and the int8 kernel decisions
(``converter.int8_kernels``) are pure and decide the format, precision, calibration and fallback
chain per profile. torch, tensorflow, onnx2torch and the runtimes are imported only inside the
steps that use them.
"""

from converter.artifacts import Artifact
from converter.benchmark import BenchmarkResult, HostInfo, latency_summary
from converter.data import LABELS_KEY, Dataset, check_dataset, read_npz
from converter.errors import STEPS, ConversionError
from converter.metrics import Check, ValidationMetrics, Verdict, compute_metrics, judge
from converter.planning import (
    CALIBRATION_METHODS,
    FORMAT_PRECISIONS,
    FORMAT_SOURCES,
    PRECISION_WIDTH,
    Attempt,
    CalibrationMethod,
    ModelFacts,
    SourceKind,
    TargetPlan,
    plan_target,
)
from converter.progress import NullProgress, Progress, RecordingProgress, RichProgress
from converter.report import AttemptRecord, BundleRecord, ConversionReport, ProfileResult
from converter.signature import parse_input_spec
from converter.sources import SourceModel, load_source
from converter.workflow import ConversionFailed, Workflow, convert

__all__ = [
    "CALIBRATION_METHODS",
    "FORMAT_PRECISIONS",
    "FORMAT_SOURCES",
    "LABELS_KEY",
    "PRECISION_WIDTH",
    "STEPS",
    "Artifact",
    "Attempt",
    "AttemptRecord",
    "BenchmarkResult",
    "BundleRecord",
    "CalibrationMethod",
    "Check",
    "ConversionError",
    "ConversionFailed",
    "ConversionReport",
    "Dataset",
    "HostInfo",
    "ModelFacts",
    "NullProgress",
    "ProfileResult",
    "Progress",
    "RecordingProgress",
    "RichProgress",
    "SourceKind",
    "SourceModel",
    "TargetPlan",
    "ValidationMetrics",
    "Verdict",
    "Workflow",
    "check_dataset",
    "compute_metrics",
    "convert",
    "judge",
    "latency_summary",
    "load_source",
    "parse_input_spec",
    "plan_target",
    "read_npz",
]
