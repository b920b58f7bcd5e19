"""The reference model zoo: what each model is, and how to load it, its data and its source file.

A ``ReferenceModel`` is plain data plus a few methods; the heavy frameworks are imported only
when a method needs them (through the model's import-path ``source``), so ``import models.zoo``
costs nothing. The registry at the bottom is the one place that lists the models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.zoo import data as zoo_data
from models.zoo.evaluation import accuracy, predict

Framework = Literal["torch", "keras"]
ImageLayout = Literal["NCHW", "NHWC"]

CALIB_FILE = "calib.npz"
EVAL_FILE = "eval.npz"
LABELS_KEY = "labels"
"""The eval ``.npz`` key holding int64 class indices, next to one array per model input."""

EXPORT_EXAMPLE_BATCH = 2
"""torch.export specialises a dimension whose example size is 1, so the example batch has 2 rows."""
MAX_EXPORT_BATCH = 1024


class UnknownReferenceError(LookupError):
    """A reference model name that is not in the zoo; the message lists the known ones."""


@dataclass(frozen=True)
class ReferenceModel:
    """A model of the zoo, described well enough to convert, calibrate and validate it."""

    name: str
    framework: Framework
    input_name: str
    input_shape: tuple[int, ...]
    """One sample's shape, without the batch dimension."""
    layout: ImageLayout
    output_name: str
    num_classes: int
    description: str
    source: str
    """``package.module:attr`` of a zero-argument factory returning the ready model (a converter source)."""
    labelled: bool
    """Whether the evaluation data has meaningful labels, so that ``evaluate`` means something."""
    data_factory: Callable[[], zoo_data.ReferenceData] = field(repr=False, compare=False)

    def load(self) -> Any:
        """The ready model in eval mode: trained weights from the cache (trained on first use), or seeded."""
        return resolve_source(self.source)()

    def datasets(self) -> zoo_data.ReferenceData:
        """Calibration, evaluation (and, for trained models, training) arrays, shaped as the model's input."""
        return self.data_factory()

    def write_data(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``calib.npz`` and ``eval.npz``: one array per input, named as the input.

        ``eval.npz`` also holds ``labels`` (int64 class indices) when the model is labelled.
        """
        data = self.datasets()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        calib_path = out_dir / CALIB_FILE
        eval_path = out_dir / EVAL_FILE
        _save_npz(calib_path, {self.input_name: data.calib})
        eval_arrays: dict[str, np.ndarray] = {self.input_name: data.eval_inputs}
        if data.eval_labels is not None:
            eval_arrays[LABELS_KEY] = data.eval_labels.astype(np.int64)
        _save_npz(eval_path, eval_arrays)
        return calib_path, eval_path

    def save_source(self, out_dir: str | Path, model: Any = None) -> Path:
        """Save the model as a converter input: torch as a ``.pt2`` ExportedProgram, keras as ``.keras``.

        The ``.pt2`` has a dynamic batch dimension; should ``torch.export`` ever fail on a model,
        a traced TorchScript ``.pt`` is written instead (the returned path's suffix tells which).
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ready = model if model is not None else self.load()
        if self.framework == "keras":
            path = out_dir / f"{self.name}.keras"
            ready.save(path)
            return path
        return _save_torch(ready, self.name, self.input_shape, out_dir)

    def evaluate(self, model: Any = None) -> float:
        """Top-1 accuracy on the evaluation split (``model`` defaults to ``load()``).

        ``model`` may be a torch module, a keras model or any callable from a numpy batch to logits.
        """
        data = self.datasets()
        if data.eval_labels is None:
            raise ValueError(
                f"{self.name} has seeded random weights and unlabelled evaluation images, so accuracy "
                "means nothing; compare its outputs against the source model's instead"
            )
        ready = model if model is not None else self.load()
        return accuracy(predict(ready, data.eval_inputs), data.eval_labels)


def resolve_source(source: str) -> Callable[[], Any]:
    """Import ``package.module:attr`` and return the attribute."""
    module_name, _, attr = source.partition(":")
    if not module_name or not attr:
        raise ValueError(f"source {source!r} must look like 'package.module:attr'")
    factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
    return factory


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # A dict[str, Any] keeps mypy from matching array keywords against savez's own allow_pickle flag.
    named: dict[str, Any] = dict(arrays)
    np.savez(path, **named)


def _save_torch(model: Any, name: str, input_shape: tuple[int, ...], out_dir: Path) -> Path:
    import torch

    example = torch.zeros((EXPORT_EXAMPLE_BATCH, *input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception:
        # Only reached by a model torch.export cannot capture; TorchScript still carries it.
        path = out_dir / f"{name}.pt"
        torch.jit.trace(model, example).save(str(path))
        return path
    path = out_dir / f"{name}.pt2"
    torch.export.save(program, path)
    return path


def _digits_nchw() -> zoo_data.ReferenceData:
    return zoo_data.digits_reference_data("NCHW")


def _digits_nhwc() -> zoo_data.ReferenceData:
    return zoo_data.digits_reference_data("NHWC")


def _mobilenet_data() -> zoo_data.ReferenceData:
    return zoo_data.random_reference_data(_MOBILENET_INPUT_SHAPE)


# Kept here rather than imported from mobilenet_mini, which would import torch.
_MOBILENET_INPUT_SHAPE = (3, 96, 96)

_REFERENCES = (
    ReferenceModel(
        name="digits-cnn",
        framework="torch",
        input_name="input",
        input_shape=(1, 8, 8),
        layout="NCHW",
        output_name="logits",
        num_classes=10,
        description="PyTorch CNN (3 conv blocks, ~26k params) trained on scikit-learn's 8x8 digits; "
        "pixels / 16 in [0, 1].",
        source="models.zoo.digits_cnn:trained_model",
        labelled=True,
        data_factory=_digits_nchw,
    ),
    ReferenceModel(
        name="digits-keras",
        framework="keras",
        input_name="input",
        input_shape=(8, 8, 1),
        layout="NHWC",
        output_name="logits",
        num_classes=10,
        description="Keras 3 twin of digits-cnn, channels-last, trained on the same split; "
        "pixels / 16 in [0, 1].",
        source="models.zoo.digits_keras:trained_model",
        labelled=True,
        data_factory=_digits_nhwc,
    ),
    ReferenceModel(
        name="mobilenet-mini",
        framework="torch",
        input_name="input",
        input_shape=_MOBILENET_INPUT_SHAPE,
        layout="NCHW",
        output_name="logits",
        num_classes=10,
        description="MobileNetV2-style PyTorch network (inverted residuals, depthwise convs, ReLU6, "
        "~1.4M params) with seeded random weights, for size and latency; data is seeded images.",
        source="models.zoo.mobilenet_mini:build_model",
        labelled=False,
        data_factory=_mobilenet_data,
    ),
)

REFERENCE_NAMES: tuple[str, ...] = tuple(ref.name for ref in _REFERENCES)
_BY_NAME = {ref.name: ref for ref in _REFERENCES}


def get_reference(name: str) -> ReferenceModel:
    """The reference model called ``name``; an unknown name raises an error listing the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownReferenceError(
            f"unknown reference model {name!r}; the zoo has: {', '.join(REFERENCE_NAMES)}"
        ) from None
