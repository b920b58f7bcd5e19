"""The releases the demo rolls out: the reference models, their data, the signing key, conversions.

- v1 is the zoo's ``digits-cnn`` as it ships (trained on first use, then cached);
- v2 is the same network retrained with another seed and more epochs: a genuinely new model;
- v3 (``broken``) is v2 whose weights were damaged after its golden outputs were recorded.

Each release is converted (v1, v2) or derived (v3) for every profile into ``release-<version>/``,
next to the converter's ``report.json`` and ``report.md``; a re-run reuses an identical conversion
(``release_cache``). torch and the converter are imported
inside the functions: ``import edgefleet.demo`` stays light.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from edgefleet.cli._console import CLIError
from edgefleet.demo.layout import KEY_NAME, DemoLayout
from edgefleet.demo.release_cache import cached_bundles, conversion_fingerprint, remember
from edgefleet.demo.settings import MODEL, PROFILES

V2_TRAINING = {"seed": 1, "epochs": 16}


@dataclass(frozen=True)
class ReferenceModels:
    """The trained networks and the data every release is calibrated, validated and tested with."""

    v1: Any  # torch.nn.Module
    v2: Any
    description: str
    calibration: Path
    evaluation: Path
    input_name: str
    output_name: str


@dataclass(frozen=True)
class Release:
    version: str
    bundles: dict[str, Path]  # profile -> signed bundle
    directory: Path
    note: str


def build_models(layout: DemoLayout) -> ReferenceModels:
    """v1 from the zoo, v2 retrained (each cached after its first training), and the data sets."""
    from models.zoo import get_reference
    from models.zoo.digits_cnn import TrainConfig, trained_model

    reference = get_reference(MODEL)
    v1 = reference.load()
    v2 = trained_model(config=TrainConfig(**V2_TRAINING))
    calibration, evaluation = reference.write_data(layout.data_dir)
    return ReferenceModels(
        v1=v1,
        v2=v2,
        description=reference.description,
        calibration=calibration,
        evaluation=evaluation,
        input_name=reference.input_name,
        output_name=reference.output_name,
    )


def evaluation_inputs(models: ReferenceModels) -> Any:
    """The evaluation images (float32 ``[N, 1, 8, 8]``): what the traffic generator sends."""
    import numpy as np

    with np.load(models.evaluation) as data:
        return np.ascontiguousarray(data[models.input_name], dtype=np.float32)


def signing_key(layout: DemoLayout) -> tuple[Path, Path]:
    """The demo's key pair (private, public): reused when present, so older bundles stay verifiable."""
    from models.bundle import BundleError, generate_keypair
    from models.bundle.signing import PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX

    private = layout.keys_dir / f"{KEY_NAME}{PRIVATE_KEY_SUFFIX}"
    public = layout.keys_dir / f"{KEY_NAME}{PUBLIC_KEY_SUFFIX}"
    if private.is_file() and public.is_file():
        return private, public
    try:
        return generate_keypair(layout.keys_dir, KEY_NAME, overwrite=True)
    except BundleError as exc:
        raise CLIError(exc.message, hint=exc.hint) from exc


def convert_release(
    model: Any,
    version: str,
    models: ReferenceModels,
    layout: DemoLayout,
    keys: tuple[Path, Path],
    console: Console,
    *,
    benchmark_iterations: int,
    note: str,
) -> Release:
    """Convert ``model`` for every demo profile into ``release-<version>/`` (or reuse the last run's
    identical conversion); show the converter's report table."""
    from converter import ConversionError, ConversionFailed, ConversionReport, RichProgress, convert

    key, public = keys
    directory = layout.release_dir(version)
    fingerprint = conversion_fingerprint(
        model,
        version,
        profiles=PROFILES,
        benchmark_iterations=benchmark_iterations,
        data=(models.calibration, models.evaluation),
        public_key=public,
    )
    cached = cached_bundles(directory, fingerprint, public)
    if cached is not None:
        report = ConversionReport.model_validate_json((directory / "report.json").read_text())
        console.print(report.rich_table())
        console.print(
            f"  [dim]reused the previous run's conversion of {version}: same weights, data, settings, "
            f"key and converter (delete {directory} to convert again)[/]",
            highlight=False,
        )
        return Release(version, cached, directory, note)
    if directory.exists():
        shutil.rmtree(directory)
    try:
        with RichProgress(console) as progress:
            report = convert(
                model,
                list(PROFILES),
                models.calibration,
                models.evaluation,
                directory,
                key,
                progress=progress,
                output_names=[models.output_name],
                name=MODEL,
                version=version,
                benchmark_iterations=benchmark_iterations,
            )
    except ConversionFailed as exc:
        console.print(exc.report.rich_table())
        raise CLIError(escape(exc.message), hint=escape(exc.hint)) from exc
    except ConversionError as exc:
        raise CLIError(escape(exc.headline()), hint=escape(exc.hint)) from exc
    console.print(report.rich_table())
    bundles = {r.profile: Path(r.bundle.path) for r in report.profiles if r.bundle is not None}
    remember(directory, fingerprint, bundles)
    return Release(version, bundles, directory, note)
