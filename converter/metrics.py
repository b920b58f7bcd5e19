"""Validation metrics and the pass/fail verdict: pure functions over arrays and a tolerance.

The candidate's outputs are compared with the fp32 original's on the same evaluation inputs:

- top-1 agreement: the share of samples whose arg-max class matches the original's;
- top-1 accuracy of both against ``labels``, and the drop in points (percent);
- cosine similarity of each sample's output vector with the original's (the mean over samples);
- the maximum and mean absolute error.

Top-1 figures only make sense for a classifier-shaped first output (``[N, classes]``); for other
models they are None.

Each output is also judged by one *task metric* (``MetricSpec``), chosen by its shape or by the
user (``--metric``), against its threshold in the tolerance: classification top-1 or top-k
agreement, sequence agreement (per-position arg-max, for CTC and token outputs ``[N, T, C]``), the
IoU or F1 of maps thresholded at a value (``[N, 1, H, W]`` probabilities), SNR in dB or cosine,
or a user's ``module:function``. Every metric is a pure function
``(reference, candidate, labels=None) -> float`` where higher is better.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hw_profiles.schema import Tolerance

# --- task metrics: pure functions (reference, candidate, labels=None) -> float, higher is better ---

MetricFunction = Callable[..., float]
SNR_CAP_DB = 100.0  # identical outputs would score +inf dB; the report and JSON need a number


class MetricError(ValueError):
    """A metric or tolerance spec that cannot be used; the message names it and says why."""


def top1_agreement(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Share of samples whose arg-max over the last (class) axis matches the reference's.

    Ties go to the lowest class index in both (``numpy.argmax``), so equal scores agree.
    """
    ref, got = _pair(reference, candidate)
    if ref.shape[0] == 0:
        return 1.0
    return float(
        np.mean(np.argmax(ref.reshape(len(ref), -1), axis=1) == np.argmax(got.reshape(len(got), -1), axis=1))
    )


def topk_agreement(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None, *, k: int = 5
) -> float:
    """Share of samples whose reference top-1 class is among the candidate's ``k`` highest scores."""
    ref, got = _pair(reference, candidate)
    ref, got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    if ref.shape[0] == 0:
        return 1.0
    k = max(1, min(int(k), got.shape[1]))
    wanted = np.argmax(ref, axis=1)
    # Stable descending order, so that among equal scores the lower class index ranks first (as argmax).
    top = np.argsort(-got, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == wanted[:, None], axis=1)))


def sequence_agreement(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """Share of positions whose arg-max over the last (class) axis agrees: ``[N, T, C]`` CTC or token outputs."""
    ref, got = _pair(reference, candidate)
    if ref.size == 0:
        return 1.0
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(got, axis=-1)))


def map_iou(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None, *, threshold: float = 0.5
) -> float:
    """IoU of the maps thresholded at ``threshold`` (value >= threshold), pooled over every sample.

    Pooling (intersections and unions summed over the set) keeps a sample with a tiny mask from
    swinging the score. Two empty masks agree perfectly (1.0); an empty one against a non-empty one
    scores 0.
    """
    ref, got = _pair(reference, candidate)
    a, b = ref >= threshold, got >= threshold
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def map_f1(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None, *, threshold: float = 0.5
) -> float:
    """F1 (Dice) of the maps thresholded at ``threshold``, pooled over every sample; two empty masks give 1.0."""
    ref, got = _pair(reference, candidate)
    a, b = ref >= threshold, got >= threshold
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else float(2 * np.count_nonzero(a & b) / total)


def snr_db(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Signal-to-noise ratio, 10·log10(Σref² / Σ(ref − cand)²), clipped to ±``SNR_CAP_DB``."""
    ref, got = _pair(reference, candidate)
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - got) ** 2))
    if noise == 0:
        return SNR_CAP_DB
    if signal == 0:
        return -SNR_CAP_DB
    return float(np.clip(10 * math.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def cosine(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Mean over samples of the cosine similarity of each sample's values (two zero vectors: 1.0)."""
    ref, got = _pair(reference, candidate)
    if ref.shape[0] == 0:
        return 1.0
    return float(np.mean(_cosines(ref.reshape(len(ref), -1), got.reshape(len(got), -1))))


class _Builtin(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    function: Any
    check: str  # the check's name in verdicts and reports
    field: str  # the Tolerance field holding its threshold
    param: str | None = None  # the keyword its parameter sets
    default: float | None = None


BUILTIN_METRICS: dict[str, _Builtin] = {
    "top1": _Builtin(function=top1_agreement, check="top1_agreement", field="min_top1_agreement"),
    "topk": _Builtin(
        function=topk_agreement, check="topk_agreement", field="min_topk_agreement", param="k", default=5
    ),
    "sequence": _Builtin(
        function=sequence_agreement, check="sequence_agreement", field="min_sequence_agreement"
    ),
    "iou": _Builtin(function=map_iou, check="iou", field="min_iou", param="threshold", default=0.5),
    "f1": _Builtin(function=map_f1, check="f1", field="min_f1", param="threshold", default=0.5),
    "snr": _Builtin(function=snr_db, check="snr_db", field="min_snr_db"),
    "cosine": _Builtin(function=cosine, check="cosine", field="min_cosine"),
}
# ``--tolerance NAME=VALUE`` also takes the tolerance's own field names and the accuracy drop.
TOLERANCE_ALIASES: dict[str, str] = {
    **{name: b.field for name, b in BUILTIN_METRICS.items()},
    "accuracy_drop": "max_accuracy_drop",
}


class MetricSpec(BaseModel):
    """One output's metric: a built-in name with its parameter, or a user's ``module:function``."""

    model_config = ConfigDict(frozen=True)

    name: str
    param: float | None = None
    output: str | None = None  # None: every output that has no metric of its own

    @property
    def is_hook(self) -> bool:
        return self.name not in BUILTIN_METRICS

    @property
    def label(self) -> str:
        """``iou:0.5``, ``topk:5``, ``top1``, ``mymodule:score``: as the user writes it."""
        if self.is_hook:
            return self.name
        builtin = BUILTIN_METRICS[self.name]
        value = self.param if self.param is not None else builtin.default
        return self.name if value is None else f"{self.name}:{value:g}"

    @property
    def check(self) -> str:
        return self.name if self.is_hook else BUILTIN_METRICS[self.name].check


def parse_metric_spec(text: str) -> MetricSpec:
    """``NAME[:PARAM]``, ``module:function``, or either after ``OUTPUT=``; MetricError when malformed."""
    raw = text.strip()
    output: str | None = None
    if "=" in raw:
        output, _, raw = (part.strip() for part in raw.partition("="))
        if not output:
            raise MetricError(f"metric {text!r} names no output before '='; write OUTPUT=NAME[:PARAM]")
    if not raw:
        raise MetricError(f"metric {text!r} names no metric; use one of {', '.join(BUILTIN_METRICS)}")
    name, _, param_text = raw.partition(":")
    if name not in BUILTIN_METRICS:
        if ":" not in raw:
            raise MetricError(
                f"unknown metric {name!r}; use one of {', '.join(BUILTIN_METRICS)}, "
                "or module:function for your own"
            )
        return MetricSpec(name=_hook_ref(raw, text), output=output)
    builtin = BUILTIN_METRICS[name]
    if not param_text:
        return MetricSpec(name=name, output=output)
    if builtin.param is None:
        raise MetricError(f"metric {name} takes no parameter (got {param_text!r} in {text!r})")
    param = _finite_number(param_text, f"metric {name}'s {builtin.param}")
    if name == "topk" and (param < 1 or param != int(param)):
        raise MetricError(f"topk's k must be a whole number of at least 1, not {param_text!r}")
    return MetricSpec(name=name, param=param, output=output)


def _finite_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MetricError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise MetricError(f"{what} must be finite, not {text!r}")
    return value


def _hook_ref(ref: str, text: str) -> str:
    module, _, function = ref.partition(":")
    if not module or not function or ":" in function:
        raise MetricError(f"metric {text!r}: a scoring function is written module:function")
    if not all(part.isidentifier() for part in module.split(".")) or not function.isidentifier():
        raise MetricError(f"metric {text!r}: {ref!r} is not a Python module:function reference")
    return ref


def parse_tolerance_spec(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` (``iou=0.9``, ``min_iou=0.9``, ``mymodule:score=0.8``) → (key, value).

    The key is a Tolerance field for built-in metrics and the accuracy drop, and the hook's
    ``module:function`` for a user's metric.
    """
    name, sep, value_text = text.strip().rpartition("=")
    name = name.strip()
    if not sep or not name:
        raise MetricError(f"tolerance {text!r} is not NAME=VALUE (e.g. iou=0.9)")
    value = _finite_number(value_text.strip(), f"tolerance {name}'s value")
    if name in TOLERANCE_ALIASES:
        return TOLERANCE_ALIASES[name], value
    if name in Tolerance.model_fields:
        return name, value
    if ":" in name:
        return _hook_ref(name, text), value
    known = sorted(TOLERANCE_ALIASES)
    raise MetricError(f"unknown tolerance {name!r}; use one of {', '.join(known)}, or module:function")


def split_tolerances(
    tolerance: Tolerance, overrides: Mapping[str, float] | None
) -> tuple[Tolerance, dict[str, float]]:
    """``tolerance`` with the built-in overrides applied (validated), and the hooks' thresholds."""
    overrides = dict(overrides or {})
    fields = {k: v for k, v in overrides.items() if k in Tolerance.model_fields}
    hooks = {k: v for k, v in overrides.items() if k not in Tolerance.model_fields}
    try:
        merged = Tolerance.model_validate({**tolerance.model_dump(), **fields})
    except ValueError as exc:
        raise MetricError(f"tolerance override {fields} is not allowed: {exc}") from None
    return merged, hooks


def is_probability_map(values: np.ndarray) -> bool:
    """``[N, 1, H, W]``, ``[N, H, W, 1]`` or ``[N, H, W]`` with every value in [0, 1].

    A 3-D output whose last axis sums to 1 everywhere is a softmax over classes ([N, T, C]), not a map.
    """
    shape = values.shape
    shaped = (len(shape) == 4 and (shape[1] == 1 or shape[-1] == 1)) or len(shape) == 3
    if not shaped or values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return False
    if float(np.min(values)) < 0 or float(np.max(values)) > 1:
        return False
    softmax = len(shape) == 3 and shape[-1] > 1 and np.allclose(np.sum(values, axis=-1), 1.0, atol=1e-3)
    return not softmax


def default_metric(values: np.ndarray) -> MetricSpec:
    """The metric an output gets unless the user picks one, from its (reference) values.

    ``[N, C]`` classifier → top1; ``[N, 1, H, W]`` / ``[N, H, W]`` maps in [0, 1] → iou at 0.5;
    ``[N, T, C]`` → sequence; anything else → cosine.
    """
    if is_classifier(values):
        return MetricSpec(name="top1")
    if is_probability_map(values):
        return MetricSpec(name="iou")
    if values.ndim == 3 and values.shape[-1] > 1:
        return MetricSpec(name="sequence")
    return MetricSpec(name="cosine")


def choose_metrics(
    reference: Mapping[str, np.ndarray], specs: Sequence[MetricSpec] | None = None
) -> dict[str, MetricSpec]:
    """Each output's metric: its own spec, else the spec without an output, else its default."""
    specs = list(specs or [])
    names = list(reference)
    general = [s for s in specs if s.output is None]
    if len(general) > 1:
        raise MetricError(
            f"more than one metric for every output ({', '.join(s.label for s in general)}); "
            "name the output for each: OUTPUT=NAME"
        )
    own: dict[str, MetricSpec] = {}
    for spec in specs:
        if spec.output is None:
            continue
        if spec.output not in reference:
            raise MetricError(
                f"metric {spec.label} names output {spec.output!r}, which the model does not have "
                f"(its outputs: {', '.join(names)})"
            )
        if spec.output in own:
            raise MetricError(
                f"output {spec.output!r} is given two metrics: {own[spec.output].label}, {spec.label}"
            )
        own[spec.output] = spec
    return {
        name: own.get(name)
        or (general[0] if general else None)
        or default_metric(np.asarray(reference[name]))
        for name in names
    }


def load_hook(ref: str) -> MetricFunction:
    """Import ``module:function``; MetricError naming the module or function when that fails."""
    module_name, _, function_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise MetricError(
            f"cannot import module {module_name!r} for metric {ref}: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        what = "is not callable" if function is not None else "does not exist"
        raise MetricError(f"metric {ref}: {module_name}.{function_name} {what} (module {module.__file__})")
    return function


def metric_function(spec: MetricSpec) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]:
    """``spec`` as one calling convention: ``(reference, candidate, labels) -> float``."""
    if not spec.is_hook:
        builtin = BUILTIN_METRICS[spec.name]
        kwargs: dict[str, Any] = {}
        if builtin.param is not None:
            value = spec.param if spec.param is not None else builtin.default
            kwargs[builtin.param] = int(value) if builtin.param == "k" else value  # type: ignore[arg-type]
        return lambda ref, got, labels: float(builtin.function(ref, got, labels, **kwargs))
    hook = load_hook(spec.name)
    takes_labels = _takes_labels(hook)

    def call(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> float:
        value = hook(ref, got, labels) if takes_labels else hook(ref, got)
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise MetricError(f"metric {spec.name} returned {value!r}, not a number") from None
        if math.isnan(score):
            raise MetricError(f"metric {spec.name} returned NaN")
        return score

    return call


def _takes_labels(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def metric_limit(
    spec: MetricSpec, tolerance: Tolerance, hook_limits: Mapping[str, float] | None = None
) -> float:
    """The threshold ``spec`` must reach: the tolerance's field, or the hook's ``--tolerance``."""
    if not spec.is_hook:
        return float(getattr(tolerance, BUILTIN_METRICS[spec.name].field))
    if hook_limits is None or spec.name not in hook_limits:
        raise MetricError(
            f"metric {spec.name} has no threshold: give one with --tolerance {spec.name}=VALUE "
            "(the score it must reach; higher is better)"
        )
    return float(hook_limits[spec.name])


class OutputScore(BaseModel):
    """One output's task metric on the evaluation set, and its cosine (for the classifier guard)."""

    model_config = ConfigDict(frozen=True)

    output: str
    metric: str  # label: iou:0.5, top1, mymodule:score
    check: str  # the check's name: iou, top1_agreement, mymodule:score
    value: float
    cosine: float


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        if ref.size != got.size:
            raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {got.shape}")
        got = got.reshape(ref.shape)
    return ref, got


class ValidationMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    samples: int
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    accuracy_drop: float | None  # points: 100 * (reference - candidate)
    cosine: float
    min_cosine: float
    max_abs_error: float
    mean_abs_error: float
    outputs: list[OutputScore] = Field(
        default_factory=list, description="Each output's task metric (empty: the legacy checks only)."
    )


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    limit: float
    passed: bool
    rule: str  # "min" or "max"
    output: str | None = None  # the output it is about; None for whole-model checks
    metric: str | None = None  # the task metric's label (``iou:0.5``) when this check is one

    def describe(self) -> str:
        op = ">=" if self.rule == "min" else "<="
        verdict = "ok" if self.passed else "MISSED"
        where = f"[{self.output}]" if self.output else ""
        return f"{self.name}{where} {self.value:.4g} (needs {op} {self.limit:.4g}): {verdict}"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    checks: list[Check]

    @property
    def failures(self) -> list[str]:
        return [check.describe() for check in self.checks if not check.passed]

    @property
    def deciding(self) -> Check | None:
        """The check that decided: the first one missed, else the first task metric."""
        return deciding_check(self.checks)


def deciding_check(checks: Sequence[Check]) -> Check | None:
    """The first missed check, else the first task-metric check, else the first check."""
    missed = [c for c in checks if not c.passed]
    if missed:
        return missed[0]
    return next((c for c in checks if c.metric is not None), checks[0] if checks else None)


def is_classifier(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[1] > 1


CLASS_METRICS = frozenset({"top1", "topk"})


def classifier_outputs(outputs: Mapping[str, np.ndarray], metrics: ValidationMetrics | None) -> set[str]:
    """The outputs that hold class scores, for the drift reference's class histograms.

    Validation's metric decides where it is known: an output judged by top-1 or top-k is a
    classifier, one judged by another built-in metric is not (an ``[N, 384]`` embedding judged by
    cosine must not be read as 384 classes); a user's hook, or no per-output metric, leaves it to
    the shape (``[N, C]``).
    """
    judged = {score.output: _spec_of(score) for score in (metrics.outputs if metrics else [])}
    return {name for name, values in outputs.items() if _holds_classes(judged.get(name), values)}


def _holds_classes(spec: MetricSpec | None, values: np.ndarray) -> bool:
    if spec is not None and not spec.is_hook:
        return spec.name in CLASS_METRICS
    return is_classifier(np.asarray(values))


def compute_metrics(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    *,
    metrics: Sequence[MetricSpec] | Mapping[str, MetricSpec] | None = None,
) -> ValidationMetrics:
    """Compare ``candidate`` with ``reference`` (same output names, same samples, in order).

    ``metrics``: the user's metric specs (see ``choose_metrics``), or each output's spec already
    chosen; outputs without one get their default.
    """
    names = list(reference)
    missing = [name for name in names if name not in candidate]
    if missing:
        raise ValueError(f"candidate lacks outputs {missing}")
    samples = len(reference[names[0]])
    ref = np.concatenate([_per_sample(reference[n], samples) for n in names], axis=1)
    got = np.concatenate([_per_sample(candidate[n], samples) for n in names], axis=1)
    if ref.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {got.shape}")
    cosines = _cosines(ref, got)
    errors = np.abs(ref - got)
    first_ref, first_got = reference[names[0]], candidate[names[0]]
    agreement = accuracy = reference_accuracy = drop = None
    if is_classifier(first_ref):
        ref_top1 = np.argmax(first_ref, axis=1)
        got_top1 = np.argmax(first_got, axis=1)
        agreement = float(np.mean(ref_top1 == got_top1))
        if labels is not None:
            reference_accuracy = float(np.mean(ref_top1 == labels))
            accuracy = float(np.mean(got_top1 == labels))
            drop = 100.0 * (reference_accuracy - accuracy)
    chosen = dict(metrics) if isinstance(metrics, Mapping) else choose_metrics(reference, metrics)
    scores = [
        OutputScore(
            output=name,
            metric=spec.label,
            check=spec.check,
            value=metric_function(spec)(reference[name], candidate[name], labels),
            cosine=cosine(reference[name], candidate[name]),
        )
        for name, spec in ((n, chosen.get(n) or default_metric(np.asarray(reference[n]))) for n in names)
    ]
    return ValidationMetrics(
        outputs=scores,
        samples=samples,
        top1_agreement=agreement,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        accuracy_drop=drop,
        cosine=float(np.mean(cosines)),
        min_cosine=float(np.min(cosines)),
        max_abs_error=float(np.max(errors)) if errors.size else 0.0,
        mean_abs_error=float(np.mean(errors)) if errors.size else 0.0,
    )


def judge(
    metrics: ValidationMetrics,
    tolerance: Tolerance,
    *,
    size_bytes: int | None = None,
    max_model_mb: float | None = None,
    integer_io: bool | None = None,
    hook_limits: Mapping[str, float] | None = None,
) -> Verdict:
    """Every check the tolerance (and the profile's size and I/O demands) implies, and whether all pass.

    With per-output scores, each output's task metric is checked against its threshold; an output
    judged by top-1 agreement keeps the cosine check classifiers always had, and with labels the
    accuracy drop is checked when the first output is judged by top-1 or top-k. ``hook_limits``:
    the thresholds of users' metrics, by ``module:function``.

    ``integer_io``: whether every model input and output is an integer tensor, for profiles that
    need full-integer models (None when the profile does not care).
    """
    if metrics.outputs:
        raw = _task_checks(metrics, tolerance, hook_limits)
        if size_bytes is not None and max_model_mb is not None:
            raw.append(_check("size_mb", size_bytes / 1e6, max_model_mb, "max"))
    else:
        raw = _checks(metrics, tolerance, size_bytes, max_model_mb)
    checks = [Check.model_validate(c) for c in raw]
    if integer_io is not None:
        checks.append(
            Check(name="integer_io", value=float(integer_io), limit=1.0, passed=integer_io, rule="min")
        )
    return Verdict(passed=all(c.passed for c in checks), checks=checks)


def _checks(
    metrics: ValidationMetrics, tolerance: Tolerance, size_bytes: int | None, max_model_mb: float | None
) -> list[dict[str, object]]:
    checks: list[dict[str, object]] = [
        _check("cosine", metrics.cosine, tolerance.min_cosine, "min"),
    ]
    if metrics.top1_agreement is not None:
        checks.append(_check("top1_agreement", metrics.top1_agreement, tolerance.min_top1_agreement, "min"))
    if metrics.accuracy_drop is not None:
        checks.append(_check("accuracy_drop", metrics.accuracy_drop, tolerance.max_accuracy_drop, "max"))
    if size_bytes is not None and max_model_mb is not None:
        checks.append(_check("size_mb", size_bytes / 1e6, max_model_mb, "max"))
    return checks


def _task_checks(
    metrics: ValidationMetrics, tolerance: Tolerance, hook_limits: Mapping[str, float] | None
) -> list[dict[str, object]]:
    checks: list[dict[str, object]] = []
    for score in metrics.outputs:
        spec = _spec_of(score)
        limit = metric_limit(spec, tolerance, hook_limits)
        checks.append(
            {**_check(score.check, score.value, limit, "min"), "output": score.output, "metric": score.metric}
        )
        if spec.name == "top1":
            checks.append(
                {**_check("cosine", score.cosine, tolerance.min_cosine, "min"), "output": score.output}
            )
    first = _spec_of(metrics.outputs[0])
    if metrics.accuracy_drop is not None and first.name in ("top1", "topk"):
        checks.append(_check("accuracy_drop", metrics.accuracy_drop, tolerance.max_accuracy_drop, "max"))
    return checks


def _spec_of(score: OutputScore) -> MetricSpec:
    name, _, param = score.metric.partition(":")
    if name in BUILTIN_METRICS:
        return MetricSpec(name=name, param=float(param) if param else None, output=score.output)
    return MetricSpec(name=score.metric, output=score.output)


def _check(name: str, value: float, limit: float, rule: str) -> dict[str, object]:
    # A tiny epsilon so that a value printed as equal to the limit is not refused by rounding.
    passed = value >= limit - 1e-9 if rule == "min" else value <= limit + 1e-9
    return {"name": name, "value": value, "limit": limit, "passed": passed, "rule": rule}


def _per_sample(values: np.ndarray, samples: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(samples, -1)


def _cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    # Two all-zero vectors agree perfectly; one zero vector against a non-zero one does not.
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(got, axis=1) == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosines)


def control_score(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    chosen: Mapping[str, MetricSpec],
    tolerance: Tolerance,
    hook_limits: Mapping[str, float] | None = None,
) -> float:
    """One number for NNCF's accuracy control, from the checks validation makes: higher is better.

    Each output's task metric (and a top-1 output's cosine guard) gives a margin over its
    threshold, scaled so that the reference against itself scores 1 and a candidate exactly at the
    threshold 0; the score is the worst margin. A candidate passes validation's metric checks
    exactly when it scores at least 0, so the drop NNCF may allow is the reference's own score.
    """
    margins = []
    for name, spec in chosen.items():
        terms = [(metric_function(spec), metric_limit(spec, tolerance, hook_limits))]
        if spec.name == "top1":
            terms.append((metric_function(MetricSpec(name="cosine")), tolerance.min_cosine))
        for function, limit in terms:
            perfect = function(reference[name], reference[name], labels)
            value = function(reference[name], candidate[name], labels)
            scale = perfect - limit if perfect - limit > 0 else 1.0
            margins.append((value - limit) / scale)
    return min(margins) if margins else 1.0
