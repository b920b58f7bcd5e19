"""The frozen reference: bin edges, reference counts and moments per feature, and how to extract them.

Built once by the converter from calibration data and written into the bundle as
``reference_stats.json``; read by the agent (to count live traffic into the same bins) and by the
fleet (to compare windows with the reference).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, cast

import numpy as np

from models.stats.binning import (
    categorical_edges,
    check_edges,
    count_in_bins,
    freeze_bin_edges,
    value_bin_edges,
)
from models.stats.features import (
    FeatureKind,
    FeatureValues,
    extract_features,
    guess_layout,
    is_classifier_output,
    looks_like_probabilities,
)
from models.stats.moments import Moments

STATS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TensorReference:
    """How features are extracted from one tensor (frozen so the agent does what the converter did)."""

    name: str
    kind: FeatureKind
    layout: str = "ANY"
    classifier: bool = False
    probabilities: bool = False
    # The axis of a served tensor that counts samples; None: each call is one sample (a scalar).
    batch_axis: int | None = 0

    def samples_first(self, array: np.ndarray) -> np.ndarray:
        """A tensor as served (samples on ``batch_axis``) with its samples on axis 0."""
        values = np.asarray(array)
        if self.batch_axis is None:
            return values.reshape(1, *values.shape)
        return (
            np.moveaxis(values, self.batch_axis, 0)
            if self.batch_axis and values.ndim > self.batch_axis
            else values
        )

    def samples(self, array: np.ndarray) -> int:
        """How many samples a tensor as served holds."""
        values = np.asarray(array)
        if self.batch_axis is None or values.ndim <= self.batch_axis:
            return 1
        return int(values.shape[self.batch_axis])

    def extract(self, array: np.ndarray, seed: int) -> dict[str, FeatureValues]:
        """Features of a tensor as served (see ``samples_first``)."""
        return self.extract_samples_first(self.samples_first(array), seed)

    def extract_samples_first(self, array: np.ndarray, seed: int) -> dict[str, FeatureValues]:
        return extract_features(
            self.name,
            array,
            self.layout,
            kind=self.kind,
            seed=seed,
            classifier=self.classifier,
            probabilities=self.probabilities,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "layout": self.layout,
            "classifier": self.classifier,
            "probabilities": self.probabilities,
            # Only where it is not 0, so references written before it keep their fingerprints.
            **({} if self.batch_axis == 0 else {"batch_axis": self.batch_axis}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorReference:
        kind = data["kind"]
        if kind not in ("input", "output"):
            raise ValueError(f"tensor {data.get('name')!r}: kind must be 'input' or 'output', got {kind!r}")
        return cls(
            name=str(data["name"]),
            kind=cast(FeatureKind, kind),
            layout=str(data.get("layout", "ANY")),
            classifier=bool(data.get("classifier", False)),
            probabilities=bool(data.get("probabilities", False)),
            batch_axis=None if (axis := data.get("batch_axis", 0)) is None else int(axis),
        )


@dataclass(frozen=True)
class FeatureReference:
    """One feature: its bins (``edges``, outer ones infinite), reference counts and moments."""

    name: str
    tensor: str
    kind: FeatureKind
    edges: np.ndarray
    counts: np.ndarray
    moments: Moments
    categorical: bool = False

    def __post_init__(self) -> None:
        edges = check_edges(self.edges)
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.shape != (len(edges) - 1,):
            raise ValueError(f"feature {self.name!r}: {len(edges) - 1} bins but {counts.size} counts")
        if np.any(counts < 0):
            raise ValueError(f"feature {self.name!r}: counts must be >= 0")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: only the finite interior edges are written; the outer ±inf are implied."""
        return {
            "name": self.name,
            "tensor": self.tensor,
            "kind": self.kind,
            "categorical": self.categorical,
            "edges": [float(e) for e in self.edges[1:-1]],
            "counts": [int(c) for c in self.counts],
            "moments": self.moments.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureReference:
        interior = np.asarray(data["edges"], dtype=np.float64).reshape(-1)
        return cls(
            name=str(data["name"]),
            tensor=str(data["tensor"]),
            kind=cast(FeatureKind, data["kind"]),
            edges=np.concatenate([[-np.inf], interior, [np.inf]]),
            counts=np.asarray(data["counts"], dtype=np.int64),
            moments=Moments.from_dict(data["moments"]),
            categorical=bool(data.get("categorical", False)),
        )


@dataclass(frozen=True)
class ReferenceStats:
    """Every tensor's extraction settings and every feature's frozen bins, with the projections' seed."""

    tensors: tuple[TensorReference, ...]
    features: dict[str, FeatureReference] = field(default_factory=dict)
    seed: int = 0
    n_bins: int = 10
    samples: int = 0
    schema_version: int = STATS_SCHEMA_VERSION

    def tensor(self, name: str) -> TensorReference:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(f"no tensor named {name!r} in the reference; known: {[t.name for t in self.tensors]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "seed": self.seed,
            "n_bins": self.n_bins,
            "samples": self.samples,
            "tensors": [tensor.to_dict() for tensor in self.tensors],
            "features": [feature.to_dict() for feature in self.features.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceStats:
        version = data.get("schema_version")
        if version != STATS_SCHEMA_VERSION:
            raise ValueError(
                f"reference statistics schema {version!r} is not supported (this code reads "
                f"{STATS_SCHEMA_VERSION}); upgrade edgefleet or rebuild the bundle"
            )
        features = [FeatureReference.from_dict(item) for item in data["features"]]
        return cls(
            tensors=tuple(TensorReference.from_dict(item) for item in data["tensors"]),
            features={feature.name: feature for feature in features},
            seed=int(data["seed"]),
            n_bins=int(data["n_bins"]),
            samples=int(data["samples"]),
        )

    def fingerprint(self) -> str:
        """A short hash of the edges and extraction settings, so windows of different bins never mix."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        # Cached: the agent stamps every window with it, and the reference never changes.
        frozen = {
            "seed": self.seed,
            "tensors": [tensor.to_dict() for tensor in self.tensors],
            "edges": {name: feature.to_dict()["edges"] for name, feature in self.features.items()},
        }
        digest = hashlib.sha256(json.dumps(frozen, sort_keys=True, separators=(",", ":")).encode("utf-8"))
        return digest.hexdigest()[:16]


def build_reference_stats(
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    *,
    n_bins: int = 10,
    seed: int = 0,
    layouts: Mapping[str, str] | None = None,
    classifier_outputs: Collection[str] | None = None,
    batch_axes: Mapping[str, int | None] | None = None,
) -> ReferenceStats:
    """Freeze bins for every feature of ``inputs`` and ``outputs`` (same batch of reference samples).

    ``layouts`` names the layout of each tensor (guessed from the shape when absent);
    ``classifier_outputs`` lists the outputs that are class scores (default: rank-2 outputs with
    several columns). Class features get one bin per class; the others ``n_bins`` quantile bins.
    Here every array holds its samples on axis 0; ``batch_axes`` records, for the tensors that are
    served otherwise, the axis that counts samples as served (None: a tensor without one, such
    as a scalar, is one value shared by every sample of a call), so the agent reads live traffic
    the same way. An integer tensor's values, and a tensor without a batch axis, get a value
    histogram (one bin per value seen, one per gap) when they take at most ``n_bins`` integer values.
    """
    layouts = layouts or {}
    tensors: list[TensorReference] = []
    features: dict[str, FeatureReference] = {}
    samples = 0
    for kind, arrays in (("input", inputs), ("output", outputs)):
        for name, array in arrays.items():
            values = np.asarray(array)
            if values.ndim == 0 or values.shape[0] == 0:
                raise ValueError(f"{kind} {name!r} has no samples (shape {values.shape})")
            samples = max(samples, int(values.shape[0]))
            tensor = _tensor_reference(name, cast(FeatureKind, kind), values, layouts, classifier_outputs)
            if batch_axes and name in batch_axes:
                tensor = replace(tensor, batch_axis=batch_axes[name])
            tensors.append(tensor)
            for feature_name, extracted in tensor.extract_samples_first(values, seed).items():
                features[feature_name] = _freeze(feature_name, tensor, extracted, n_bins)
    if not tensors:
        raise ValueError("no tensors to build reference statistics from")
    return ReferenceStats(
        tensors=tuple(tensors), features=features, seed=seed, n_bins=n_bins, samples=samples
    )


def _tensor_reference(
    name: str,
    kind: FeatureKind,
    values: np.ndarray,
    layouts: Mapping[str, str],
    classifier_outputs: Collection[str] | None,
) -> TensorReference:
    layout = layouts.get(name) or guess_layout(values.shape)
    if kind == "input":
        return TensorReference(name=name, kind=kind, layout=layout)
    classifier = (
        name in classifier_outputs if classifier_outputs is not None else is_classifier_output(values.shape)
    )
    probabilities = classifier and looks_like_probabilities(values.reshape(values.shape[0], -1))
    return TensorReference(
        name=name, kind=kind, layout=layout, classifier=classifier, probabilities=probabilities
    )


def _freeze(name: str, tensor: TensorReference, extracted: FeatureValues, n_bins: int) -> FeatureReference:
    finite = extracted.values[np.isfinite(extracted.values)]
    if finite.size == 0:
        raise ValueError(f"feature {name!r} has no finite reference values")
    categorical = extracted.categories is not None
    edges = (
        categorical_edges(extracted.categories)
        if extracted.categories
        else _edges(tensor, extracted, finite, n_bins)
    )
    return FeatureReference(
        name=name,
        tensor=tensor.name,
        kind=tensor.kind,
        edges=edges,
        counts=count_in_bins(edges, finite),
        moments=Moments.of(finite),
        categorical=categorical,
    )


def _edges(tensor: TensorReference, extracted: FeatureValues, finite: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bins; a value histogram for an integer tensor's values or a tensor without a batch
    axis (a sample rate, a mode flag), whose few values are settings rather than measurements."""
    if extracted.discrete or tensor.batch_axis is None:
        edges = value_bin_edges(finite, n_bins)
        if edges is not None:
            return edges
    return freeze_bin_edges(finite, n_bins)
