"""Packaging: the manifest, golden I/O, reference statistics, and the signed, verified bundle.

The manifest's I/O signature comes from the artifact's own runtime session (names, dtypes,
shapes and the quantization parameters of integer tensors), with the layouts the source
declared. ``golden.npz`` holds a few evaluation inputs and the artifact's own outputs, chosen
where the top-1 decision has a clear margin, so that a device can check its install exactly.
"""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from converter.artifacts import Artifact
from converter.context import AttemptState, ConversionContext, TargetState
from converter.data import Dataset, samples_first, take_samples
from converter.errors import ConversionError
from converter.metrics import classifier_outputs, is_classifier
from converter.passes import Pass, _Config, open_artifact, run_batches
from converter.report import BundleRecord
from hw_profiles.schema import HardwareProfile, Precision
from models.bundle.manifest import (
    GOLDEN_NAME,
    REFERENCE_STATS_NAME,
    GoldenSpec,
    Manifest,
    Preprocessing,
    RuntimeSpec,
    TensorSpec,
)

GOLDEN_SAMPLES = 8
REFERENCE_STATS_SAMPLES = 1024


class PackageConfig(_Config):
    name: str | None = Field(default=None, description="Model name; None takes the source's name.")
    version: str = "1.0.0"
    key: Path = Field(description="Ed25519 private key (PEM) that signs the manifest.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    golden_samples: int = Field(default=GOLDEN_SAMPLES, gt=0)
    n_bins: int = Field(default=10, ge=2)
    labels: dict[str, str] = Field(default_factory=dict)


class PackagePass(Pass[PackageConfig]):
    """Write ``<name>-<version>-<profile>.efb`` for the chosen attempt, then verify it."""

    step = "package"

    def run(self, ctx: ConversionContext) -> None:
        from models.bundle import BundleError, load_private_key, pack_bundle, verify_bundle

        target = ctx.require_target()
        state = target.chosen
        if state is None or state.artifact is None or state.outputs is None:
            raise RuntimeError(f"nothing was chosen to package for {target.profile.name}")
        artifact, cfg = state.artifact, self.config
        name = cfg.name or ctx.require_source().name
        try:
            key = load_private_key(cfg.key)
        except BundleError as exc:
            raise ConversionError(
                f"cannot use the signing key {cfg.key}: {exc.message}",
                step="package",
                hint="create one with `edgefleet keys generate`, or pass the right --key",
            ) from exc
        extras_dir = artifact.directory.parent / f"{artifact.directory.name}-bundle"
        extras_dir.mkdir(parents=True, exist_ok=True)
        with ctx.progress.task(f"{target.profile.name}: package and sign"):
            inputs, outputs = self._signature(ctx, artifact, target.profile)
            golden = self._write_golden(ctx, state, extras_dir / GOLDEN_NAME)
            self._write_reference_stats(
                ctx, state, target.profile, inputs, outputs, extras_dir / REFERENCE_STATS_NAME
            )
            sources: dict[str, Path] = dict(artifact.paths())
            sources[GOLDEN_NAME] = extras_dir / GOLDEN_NAME
            sources[REFERENCE_STATS_NAME] = extras_dir / REFERENCE_STATS_NAME
            manifest = self._manifest(ctx, target, state, inputs, outputs, golden, sources, name)
            out = ctx.out_dir / f"{name}-{cfg.version}-{target.profile.name}.efb"
            try:
                pack_bundle(out, manifest, sources, key)
                verified = verify_bundle(out, [key.public_key()])
            except BundleError as exc:
                raise ConversionError(
                    f"the bundle for {target.profile.name} could not be written or verified: {exc.message}",
                    step="package",
                    hint=exc.hint or "check the output directory is writable and has space",
                ) from exc
        target.bundle = BundleRecord(
            path=str(out),
            sha256=verified.sha256,
            size_bytes=verified.size,
            key_id=verified.key_id,
            verified=True,
        )

    def _signature(
        self, ctx: ConversionContext, artifact: Artifact, profile: HardwareProfile
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        source = ctx.require_source()
        with open_artifact(artifact, profile, source) as session:
            inputs, outputs = list(session.inputs), list(session.outputs)
        return _with_layouts(inputs, source.inputs), _with_layouts(outputs, source.outputs)

    def _write_golden(self, ctx: ConversionContext, state: AttemptState, path: Path) -> GoldenSpec:
        _, evaluation, _ = ctx.require_data()
        assert state.outputs is not None
        source = ctx.require_source()
        candidates = _golden_candidates(evaluation)
        outputs = take_samples(state.outputs, source.outputs, candidates)
        picks = candidates[golden_indices(samples_first(outputs, source.outputs), self.config.golden_samples)]
        # Keyed by the manifest's tensor names, which are unique across inputs and outputs; each
        # tensor's samples on its own batch axis, an input without one stored once (shape as served).
        chosen = evaluation.select(picks)
        arrays = {k: v[0] if k in chosen.fixed else v for k, v in chosen.inputs.items()}
        arrays.update(take_samples(state.outputs, source.outputs, picks))
        _save_npz(path, arrays)
        atol, rtol = golden_tolerance(state.attempt.precision, state.outputs)
        return GoldenSpec(file=GOLDEN_NAME, atol=atol, rtol=rtol, min_top1_agreement=1.0)

    def _write_reference_stats(
        self,
        ctx: ConversionContext,
        state: AttemptState,
        profile: HardwareProfile,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        path: Path,
    ) -> None:
        from models.bundle.manifest import canonical_json
        from models.stats import build_reference_stats

        # The held-out evaluation set, not the calibration set: calibration rows usually come from
        # the training split, where the model is over-confident, so its output histograms would
        # read as drift against any real traffic.
        _, evaluation, _ = ctx.require_data()
        artifact = state.artifact
        assert artifact is not None
        sample = evaluation.take(REFERENCE_STATS_SAMPLES)
        with open_artifact(artifact, profile, ctx.require_source()) as session:
            produced = samples_first(run_batches(session, sample, 64), outputs)
        try:
            stats = build_reference_stats(
                {name: sample.samples_first(name) for name in sample.inputs},
                produced,
                classifier_outputs=classifier_outputs(produced, state.metrics),
                batch_axes={s.name: s.batch_axis for s in [*inputs, *outputs] if s.batch_axis != 0},
                n_bins=self.config.n_bins,
                seed=0,
                layouts={s.name: s.layout for s in [*inputs, *outputs] if s.layout != "ANY"},
            )
        except ValueError as exc:
            raise ConversionError(
                f"cannot freeze drift statistics from the evaluation set: {exc}",
                step="package",
                format=artifact.attempt.format.value,
                hint="check the evaluation arrays hold real, finite samples",
            ) from exc
        path.write_bytes(canonical_json(stats.to_dict()))

    def _manifest(
        self,
        ctx: ConversionContext,
        target: TargetState,
        state: AttemptState,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        golden: GoldenSpec,
        sources: dict[str, Path],
        name: str,
    ) -> Manifest:
        from models.bundle import build_manifest_files

        artifact = state.artifact
        assert artifact is not None and state.metrics is not None and state.verdict is not None
        roles: dict[str, Any] = {
            name: (path, artifact.files.get(name, "extra")) for name, path in sources.items()
        }
        roles[GOLDEN_NAME] = (sources[GOLDEN_NAME], "golden")
        roles[REFERENCE_STATS_NAME] = (sources[REFERENCE_STATS_NAME], "reference_stats")
        profile, cfg = target.profile, self.config
        runtime = profile.runtime_for(artifact.attempt.format)
        options: dict[str, Any] = {"threads": profile.threads}
        if runtime.execution_providers:
            options["execution_providers"] = list(runtime.execution_providers)
        if runtime.devices:
            options["devices"] = list(runtime.devices)
        if runtime.delegates:
            options["delegates"] = list(runtime.delegates)
        options.update(runtime.options)
        source = ctx.require_source()
        labels = {"source": source.description, "converter": _converter_version(), **cfg.labels}
        if artifact.attempt.calibration is not None:
            labels["calibration"] = artifact.attempt.calibration.value
        if artifact.attempt.mixed:  # int8/mixed: which nodes the int8 model keeps in float
            labels["mixed_precision"] = ",".join(artifact.float_nodes)
        return Manifest(
            name=name,
            version=cfg.version,
            profile=profile.name,
            format=artifact.attempt.format,
            precision=artifact.attempt.precision,
            runtime=RuntimeSpec(name=runtime.name, options=options),
            model_file=artifact.model_file,
            inputs=inputs,
            outputs=outputs,
            preprocessing=cfg.preprocessing,
            files=build_manifest_files(roles),
            golden=golden,
            validation={
                "passed": state.verdict.passed,
                "degraded": target.degraded,
                "tolerance": profile.tolerance.model_dump(),
                "checks": [c.model_dump() for c in state.verdict.checks],
                "provider": state.provider,
                **state.metrics.model_dump(),
            },
            benchmark=state.benchmark.model_dump(mode="json") if state.benchmark else {},
            reference_stats=REFERENCE_STATS_NAME,
            created=_created(),
            labels=labels,
        )


def _golden_candidates(evaluation: Dataset) -> np.ndarray:
    """The samples golden I/O may use: those sharing the first sample's per-sample fixed inputs.

    The golden inputs are fed as one request, so an input without a batch axis (a sample rate)
    must hold one value for all of them.
    """
    rows = np.arange(evaluation.size)
    for name in evaluation.fixed:
        values = evaluation.inputs[name]
        rows = rows[[bool(np.array_equal(values[i], values[0])) for i in rows]]
    return rows


def golden_indices(outputs: dict[str, np.ndarray], count: int) -> np.ndarray:
    """The samples to freeze as golden I/O: for a classifier, those with the widest top-1 margin.

    A wide margin means a device whose kernels round a little differently still picks the same
    class, so the golden check can demand full top-1 agreement without flaking.
    """
    first = next(iter(outputs.values()))
    total = len(first)
    count = min(count, total)
    if not is_classifier(first):
        return np.arange(count)
    ordered = np.sort(first, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    return np.sort(np.argsort(-margins, kind="stable")[:count])


def golden_tolerance(precision: Precision, outputs: dict[str, np.ndarray]) -> tuple[float, float]:
    """(atol, rtol) for comparing a device's outputs with the golden ones.

    Scaled by the outputs' magnitude, and looser for reduced precisions, whose kernels differ
    most between a converting x86 host and an ARM device (fp16 accumulation, int8 requantization).
    """
    scale = max((float(np.max(np.abs(v))) for v in outputs.values() if v.size), default=1.0) or 1.0
    relative = {
        Precision.FP32: (1e-4, 1e-3),
        Precision.FP16: (1e-2, 1e-2),
        Precision.INT8: (5e-2, 5e-2),
        Precision.INT8_DYNAMIC: (5e-2, 5e-2),
    }[precision]
    return round(relative[0] * scale + 1e-6, 8), relative[1]


def _with_layouts(specs: list[TensorSpec], declared: list[TensorSpec]) -> list[TensorSpec]:
    layouts = {s.name: s.layout for s in declared}
    return [
        s.model_copy(update={"layout": layouts[s.name]}) if layouts.get(s.name, "ANY") != "ANY" else s
        for s in specs
    ]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that ``np.load`` reads, with fixed entry timestamps (np.savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asarray(arrays[name], order="C"), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue()
            )


def _created() -> datetime:
    """Now, or SOURCE_DATE_EPOCH for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    return datetime.now(UTC)


def _converter_version() -> str:
    from edgefleet import __version__

    return f"edgefleet {__version__}"
