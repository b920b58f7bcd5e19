"""`edgefleet demo`: the converter end to end on the zoo's digits-cnn, narrated.

It builds ``digits-cnn`` (trained on first use, then cached), writes its calibration and
evaluation sets, creates a signing key under ``<out>/keys/`` (or reuses it), converts the model
for a Raspberry Pi 5, a Jetson Orin Nano and an Intel OpenVINO box, and prints the report. The
bundles and reports stay in ``<out>/``. Later stages of the project extend this demo to the agent
and the fleet server.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from edgefleet.cli._console import console, fail

DEMO_MODEL = "digits-cnn"
DEMO_PROFILES = ("raspberry-pi-5", "jetson-orin-nano", "intel-x86-openvino")
DEMO_KEY_NAME = "edgefleet-demo"
FAST_BENCHMARK_ITERATIONS = 20


def demo(
    out: Path = typer.Option(
        Path("edgefleet-demo"), "--out", "-o", help="Directory for everything the demo writes."
    ),
    fast: bool = typer.Option(
        False, "--fast", help="Fewer benchmark iterations: quicker, noisier latencies."
    ),
) -> None:
    """Run the end-to-end demo: build digits-cnn, convert it for three devices, sign and verify bundles."""
    from converter import ConversionError, ConversionFailed, RichProgress, convert
    from models.zoo import get_reference

    started = time.perf_counter()
    reference = get_reference(DEMO_MODEL)
    _step(1, "the model", f"[bold]{reference.name}[/]: {reference.description}")
    with console.status("loading digits-cnn (trained and cached on first use)…"):
        reference.load()
    calib, evaluation = reference.write_data(out / "data")
    _step(
        2, "the data", f"calibration set [cyan]{calib}[/], evaluation set with labels [cyan]{evaluation}[/]"
    )
    key, public = _signing_key(out / "keys")
    _step(3, "the signing key", f"[cyan]{key}[/] signs; devices trust [cyan]{public}[/]")
    _step(
        4,
        "convert, validate, benchmark, package",
        "profiles: " + ", ".join(f"[bold]{p}[/]" for p in DEMO_PROFILES),
    )
    try:
        with RichProgress() as progress:
            report = convert(
                reference.source,
                list(DEMO_PROFILES),
                calib,
                evaluation,
                out,
                key,
                progress=progress,
                output_names=[reference.output_name],
                name=reference.name,
                benchmark_iterations=FAST_BENCHMARK_ITERATIONS if fast else 100,
            )
    except ConversionFailed as exc:
        console.print(exc.report.rich_table())
        fail(escape(exc.message), hint=escape(exc.hint))
    except ConversionError as exc:
        fail(escape(exc.headline()), hint=escape(exc.hint))
    console.print()
    console.print(report.rich_table())
    for result in report.profiles:
        if result.bundle is not None:
            console.print(
                f"[green]✓[/] {result.profile}: {result.bundle.path}", highlight=False, soft_wrap=True
            )
    elapsed = time.perf_counter() - started
    first = next(r.bundle.path for r in report.profiles if r.bundle is not None)
    console.print(
        f"\n[bold green]Done in {elapsed:.0f} s.[/] Bundles and report.md are in [cyan]{out}[/]. Try:\n"
        f"  edgefleet bundle inspect {first}\n"
        f"  edgefleet bundle verify --trusted-key {public} {first}",
        highlight=False,
        soft_wrap=True,
    )


def _step(number: int, title: str, detail: str) -> None:
    console.print(f"\n[bold magenta]Step {number}/4[/] [bold]{title}[/]")
    console.print(f"  {detail}", highlight=False, soft_wrap=True)


def _signing_key(directory: Path) -> tuple[Path, Path]:
    """The demo's key pair: reused when present, so earlier demo bundles stay verifiable."""
    from models.bundle import BundleError, generate_keypair
    from models.bundle.signing import PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX

    private = directory / f"{DEMO_KEY_NAME}{PRIVATE_KEY_SUFFIX}"
    public = directory / f"{DEMO_KEY_NAME}{PUBLIC_KEY_SUFFIX}"
    if private.is_file() and public.is_file():
        return private, public
    try:
        return generate_keypair(directory, DEMO_KEY_NAME)
    except BundleError as exc:
        fail(escape(exc.message), hint=escape(exc.hint))
