"""Reading a model's I/O signature into ``TensorSpec`` and checking it against a manifest's.

The runtime is the truth about names, dtypes and shapes; the manifest adds what a model file
cannot say (the layout) and, for runtimes whose files carry no quantization parameters, the
scale and zero point of integer I/O. A disagreement means the bundle describes another model,
so it is refused with every difference listed. One difference is allowed: a manifest may serve a
tensor wider than the model runs it (int64 ids that a TFLite model holds as int32,
``edge_agent.runtimes.casting``); the session then serves the manifest's dtype and casts at its
edge, and ``runtime_dtypes`` says which tensors run narrower.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import cast

from edge_agent.runtimes.casting import castable
from edge_agent.runtimes.errors import ModelLoadFailed, SignatureMismatch
from models.bundle.manifest import Layout, QuantParams, TensorDType, TensorSpec
from models.stats import guess_layout

SUPPORTED_DTYPES: frozenset[str] = frozenset(
    {"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"}
)

Signature = tuple[Sequence[TensorSpec], Sequence[TensorSpec]]


def make_spec(
    name: str,
    dtype: str,
    shape: Iterable[int | str | None],
    *,
    quantization: QuantParams | None = None,
    model: str,
) -> TensorSpec:
    """A ``TensorSpec`` from what a runtime reports; symbolic or unknown dimensions become -1."""
    if dtype not in SUPPORTED_DTYPES:
        raise ModelLoadFailed(
            f"{model}: tensor {name!r} has dtype {dtype}, which edgefleet cannot serve",
            hint=f"re-export the model with one of {sorted(SUPPORTED_DTYPES)} at its inputs and outputs",
        )
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
    return TensorSpec(
        name=name,
        dtype=cast(TensorDType, dtype),
        shape=dims,
        layout=cast(Layout, guess_layout(dims)),
        quantization=quantization,
    )


def reconcile_signature(
    model_inputs: list[TensorSpec],
    model_outputs: list[TensorSpec],
    expected: Signature | None,
    *,
    model: str,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The session's signature: the model's own, completed by ``expected`` after checking they agree.

    Where ``expected`` serves a tensor wider than the model runs it (``castable``), the session's
    spec takes the expected dtype; ``runtime_dtypes`` then lists the model's own.
    """
    if expected is None:
        return model_inputs, model_outputs
    want_inputs, want_outputs = list(expected[0]), list(expected[1])
    problems = signature_problems(model_inputs, want_inputs, "input") + signature_problems(
        model_outputs, want_outputs, "output"
    )
    if problems:
        raise SignatureMismatch(
            f"{model} does not match its manifest: " + "; ".join(problems),
            hint="the bundle describes another model: rebuild it with `edgefleet convert`",
        )
    return _merge(model_inputs, want_inputs), _merge(model_outputs, want_outputs)


def signature_problems(actual: list[TensorSpec], expected: list[TensorSpec], role: str) -> list[str]:
    """Every way ``actual`` (from the model) disagrees with ``expected`` (from a manifest)."""
    problems: list[str] = []
    by_name = {spec.name: spec for spec in actual}
    missing = [spec.name for spec in expected if spec.name not in by_name]
    extra = sorted(set(by_name) - {spec.name for spec in expected})
    if missing:
        problems.append(f"{role}(s) {missing} are in the manifest but not in the model")
    if extra:
        problems.append(f"the model has {role}(s) {extra} that the manifest does not list")
    for want in expected:
        got = by_name.get(want.name)
        if got is not None:
            problems.extend(_tensor_problems(got, want, role))
    return problems


def _tensor_problems(got: TensorSpec, want: TensorSpec, role: str) -> list[str]:
    label = f"{role} {want.name!r}"
    problems: list[str] = []
    if got.dtype != want.dtype and not _served_wider(got, want):
        problems.append(f"{label} is {got.dtype} in the model but {want.dtype} in the manifest")
    if not shapes_compatible(got.shape, want.shape):
        problems.append(f"{label} has shape {got.shape} in the model but {want.shape} in the manifest")
    if want.quantization is not None and want.quantization.dtype != want.dtype:
        problems.append(
            f"{label} is {want.dtype} in the manifest but its quantization says {want.quantization.dtype}"
        )
    if got.quantization is not None:
        if want.quantization is None:
            problems.append(
                f"{label} is quantized in the model ({_quant_text(got.quantization)}) "
                "but the manifest has no quantization for it"
            )
        elif not quantization_equal(got.quantization, want.quantization):
            problems.append(
                f"{label} is quantized as {_quant_text(got.quantization)} in the model "
                f"but {_quant_text(want.quantization)} in the manifest"
            )
    return problems


def _served_wider(got: TensorSpec, want: TensorSpec) -> bool:
    """The manifest serves an unquantized tensor in a wider dtype than the model runs it."""
    return got.quantization is None and want.quantization is None and castable(want.dtype, got.dtype)


def runtime_dtypes(model_specs: Iterable[TensorSpec], session_specs: Iterable[TensorSpec]) -> dict[str, str]:
    """The tensors the model runs in another dtype than the session serves: name -> the model's dtype."""
    served = {spec.name: spec.dtype for spec in session_specs}
    return {
        spec.name: spec.dtype
        for spec in model_specs
        if spec.name in served and served[spec.name] != spec.dtype
    }


def shapes_compatible(model_shape: Sequence[int], manifest_shape: Sequence[int]) -> bool:
    """Same rank; each dimension equal, dynamic in the model, or a static batch of 1 (looped over)."""
    if len(model_shape) != len(manifest_shape):
        return False
    for axis, (got, want) in enumerate(zip(model_shape, manifest_shape, strict=True)):
        if got == -1 or got == want:
            continue
        if axis == 0 and got == 1 and want == -1:
            continue
        return False
    return True


def quantization_equal(a: QuantParams, b: QuantParams) -> bool:
    return (
        a.dtype == b.dtype
        and a.zero_point == b.zero_point
        and math.isclose(a.scale, b.scale, rel_tol=1e-6, abs_tol=0.0)
    )


def _merge(model_specs: list[TensorSpec], expected: list[TensorSpec]) -> list[TensorSpec]:
    by_name = {spec.name: spec for spec in model_specs}
    merged = []
    for want in expected:
        got = by_name[want.name]
        merged.append(
            got.model_copy(
                update={
                    "dtype": want.dtype if _served_wider(got, want) else got.dtype,
                    "layout": want.layout if want.layout != "ANY" else got.layout,
                    "quantization": got.quantization or want.quantization,
                    # A model file does not say which axis counts samples: the manifest does.
                    "batch_axis": want.batch_axis,
                    "state_for": want.state_for,
                }
            )
        )
    return merged


def _quant_text(params: QuantParams) -> str:
    return f"{params.dtype} scale={params.scale:g} zero_point={params.zero_point}"
