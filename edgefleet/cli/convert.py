"""`edgefleet convert`: one signed, validated bundle per hardware profile.

Registered by the root app as ``app.command(name="convert")(convert.convert)``. The converter
(and torch with it) is imported inside the command, so ``edgefleet --help`` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli._console import console, err_console, fail, print_json
from hw_profiles.schema import ModelFormat, Precision


class Calibration(StrEnum):
    """``converter.planning.CalibrationMethod``'s values, for ``--calibration``.

    A copy, because importing the converter here would load numpy and the rest of it on every
    ``edgefleet`` start; a unit test keeps the two equal.
    """

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    HISTOGRAM = "histogram"
    CONVERTER = "converter"
    ACCURACY_CONTROL = "accuracy-control"


def convert(
    source: str = typer.Argument(
        ...,
        help="The trained model: package.module:attr (an nn.Module or keras.Model, or its factory), "
        "a .pt2 ExportedProgram, a TorchScript .pt, a .keras file, a SavedModel directory, or an .onnx file.",
        metavar="SOURCE",
        show_default=False,
    ),
    profile: list[str] = typer.Option(
        ...,
        "--profile",
        "-p",
        help="Hardware profile name or YAML file; repeat for several.",
        show_default=False,
    ),
    calib: Path = typer.Option(
        ..., "--calib", help="Calibration .npz: one array per model input.", show_default=False
    ),
    eval_set: Path = typer.Option(
        ...,
        "--eval",
        help="Evaluation .npz: one array per input, plus optional integer 'labels'.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("edgefleet-out"), "--out", "-o", help="Directory for bundles and reports."),
    key: Path = typer.Option(
        ...,
        "--key",
        help="Ed25519 private key that signs the bundles (edgefleet keys generate).",
        show_default=False,
    ),
    formats: list[ModelFormat] | None = typer.Option(
        None, "--format", help="Artifact format, overriding the profiles' preference (repeatable)."
    ),
    precisions: list[Precision] | None = typer.Option(
        None, "--precision", help="Precision, overriding the profiles' preference (repeatable)."
    ),
    calibrations: list[Calibration] | None = typer.Option(
        None,
        "--calibration",
        help="Static int8 calibration method to try, in the order given (repeatable); "
        "default: every method the format offers.",
    ),
    inputs: list[str] | None = typer.Option(
        None,
        "--input",
        help="Input as name:1x3x224x224:float32[:NCHW], when the model does not say (repeatable). "
        "N marks the batch axis wherever it is (state:2xNx128:float32); an empty shape is a scalar "
        "(sr::int64); a fixed shape not starting with 1 has no batch axis.",
    ),
    states: list[str] | None = typer.Option(
        None,
        "--state",
        help="Recurrent state as OUTPUT=INPUT: the output feeds that input on the next call "
        "(repeatable; e.g. stateN=state). Validation runs the data as a stream, in order.",
    ),
    outputs: list[str] | None = typer.Option(
        None,
        "--output",
        help="Output tensor name of a PyTorch or Keras model, in order (repeatable); or "
        "name:shape[:dtype] as --input, N on the output's batch axis, no N for none "
        "(387:?xNx8210), when the model returns it elsewhere than it declares.",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Model name in the bundles (default: from the source)."
    ),
    model_version: str = typer.Option("1.0.0", "--model-version", help="Semantic version of the bundles."),
    metrics: list[str] | None = typer.Option(
        None,
        "--metric",
        help="How to judge outputs against fp32: [OUTPUT=]NAME[:PARAM], NAME one of top1, topk[:K], "
        "sequence, iou[:THRESHOLD], f1[:THRESHOLD], snr, cosine, or module:function returning a score "
        "(higher is better); e.g. maps=iou:0.3 (repeatable; default by output shape).",
    ),
    tolerances: list[str] | None = typer.Option(
        None,
        "--tolerance",
        help="A metric's threshold over the profiles' tolerance: NAME=VALUE, e.g. iou=0.9, "
        "sequence=0.97, mymodule:score=0.8 (repeatable).",
    ),
    allow_degraded: bool = typer.Option(
        False,
        "--allow-degraded",
        help="When nothing meets the tolerance, package the closest attempt anyway.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON (no progress bars)."),
) -> None:
    """Convert a trained model per hardware profile: plan, export, quantize, validate, benchmark, sign."""
    from rich.markup import escape

    from converter import ConversionError, ConversionFailed, ConversionReport, NullProgress, RichProgress
    from converter import convert as run_conversion

    def run(progress: Any) -> ConversionReport:
        return run_conversion(
            source,
            profile,
            calib,
            eval_set,
            out,
            key,
            formats=formats or None,
            precisions=precisions or None,
            calibrations=[c.value for c in calibrations] if calibrations else None,
            allow_degraded=allow_degraded,
            metrics=metrics or None,
            tolerances=tolerances or None,
            progress=progress,
            inputs=inputs or None,
            output_names=outputs or None,
            states=states or None,
            name=name,
            version=model_version,
        )

    try:
        if json_output:
            report = run(NullProgress())
        else:
            with RichProgress() as progress:
                report = run(progress)
    except ConversionFailed as exc:
        show_report(exc.report, json_output)
        fail(escape(exc.message), hint=escape(exc.hint))
    except ConversionError as exc:
        if json_output:
            print_json({"error": exc.to_dict()})
        fail(escape(exc.headline()), hint=escape(exc.hint))
    show_report(report, json_output)


def show_report(report: Any, json_output: bool) -> None:
    """The report as JSON, or as a table with the bundles and report files listed under it."""
    if json_output:
        print_json(report.model_dump(mode="json"))
        return
    console.print(report.rich_table())
    for result in report.profiles:
        if result.bundle is not None:
            mark = "[yellow]![/]" if result.status == "degraded" else "[green]✓[/]"
            console.print(f"{mark} {result.profile}: {result.bundle.path}", highlight=False, soft_wrap=True)
        else:
            err_console.print(f"[red]✗[/] {result.profile}: no bundle", highlight=False)
    out_dir = Path(report.out_dir)
    console.print(f"[dim]reports: {out_dir / 'report.md'}, {out_dir / 'report.json'}[/]", soft_wrap=True)
