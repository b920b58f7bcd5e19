"""Run a reference model on numpy inputs and score it, whatever framework it comes from.

``predict`` accepts a ``torch.nn.Module``, a ``keras.Model`` or any callable from a numpy batch
to logits (an onnxruntime or TFLite wrapper, say), so the converter can score what it built with
the same code that scores the source model. Frameworks are only touched if already imported:
a model of that framework cannot exist otherwise.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

PREDICT_BATCH_SIZE = 256


def accuracy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Top-1 accuracy: the share of rows whose arg-max equals the label."""
    scores = np.asarray(logits)
    truth = np.asarray(labels)
    if scores.ndim != 2 or truth.ndim != 1 or scores.shape[0] != truth.shape[0]:
        raise ValueError(f"need logits [N, classes] and labels [N], got {scores.shape} and {truth.shape}")
    if truth.size == 0:
        raise ValueError("cannot score an empty evaluation set")
    return float(np.mean(scores.argmax(axis=1) == truth))


def predict(model: Any, inputs: npt.NDArray[np.float32], batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """The model's outputs for ``inputs`` as one numpy array, computed in batches."""
    run = _batch_runner(model)
    batches = [run(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    return np.concatenate(batches, axis=0)


def _batch_runner(model: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return lambda batch: _torch_forward(torch, model, batch)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return lambda batch: np.asarray(model.predict_on_batch(batch))
    if callable(model):
        return lambda batch: np.asarray(model(batch))
    raise TypeError(
        f"cannot run a {type(model).__name__}: pass a torch.nn.Module, a keras.Model, "
        "or a callable that maps a numpy batch to logits"
    )


def _torch_forward(torch: Any, model: Any, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(model(torch.from_numpy(np.ascontiguousarray(batch))).detach().cpu().numpy())
