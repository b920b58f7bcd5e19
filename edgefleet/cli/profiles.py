"""``edgefleet profiles``: list, show and validate the hardware profiles the converter builds for.

Profiles come from the search path: every directory in ``EDGEFLEET_PROFILES_DIR``, then the
built-in ``hw_profiles/``. A broken or unknown profile is an operator error: one clear message and
exit code 1, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from edgefleet.cli._console import CLIError, cli_errors, console, err_console, print_json

# Submodules, not the package: an editable install made before hw_profiles/__init__.py existed
# sees a namespace package, and the package-level re-exports would be missing there.
from hw_profiles.loader import (
    PROFILE_SUFFIX,
    PROFILES_DIR_ENV,
    ProfileError,
    display_path,
    find_profiles,
    list_profiles,
    load_profile_file,
    resolve_profile_path,
)
from hw_profiles.schema import HardwareProfile

app = typer.Typer(
    help=(
        "Hardware profiles: the targets the converter builds for and the agent runs on. "
        f"Add your own with {PROFILES_DIR_ENV}."
    ),
    no_args_is_help=True,
)

_JSON_HELP = "Print JSON (the profile schema's fields) instead of tables."
_NONE = "[dim]—[/]"


@contextmanager
def _profile_errors() -> Iterator[None]:
    """Show a ProfileError as the operator's error: its message (file, field, line) and a hint."""
    with cli_errors():
        try:
            yield
        except ProfileError as exc:
            hint = escape(exc.hint) if exc.hint else None
            raise CLIError(escape(exc.message), hint=hint) from exc


# --- Formatting helpers (pure) ---------------------------------------------------------------------


def _memory(mb: float | None) -> str:
    if mb is None:
        return "shared"
    return f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb:g} MB"


def _cpu(profile: HardwareProfile) -> str:
    clock = f" @ {profile.cpu.max_ghz:g} GHz" if profile.cpu.max_ghz else ""
    return escape(profile.cpu.model) + clock


def _default(profile: HardwareProfile) -> str:
    text = f"{profile.default_format.value} {profile.default_precision.value}"
    if profile.quantization.full_integer_io:
        text += " (integer I/O)"
    return text


def _runtime_targets(profile: HardwareProfile) -> list[str]:
    """Each runtime with what it drives: ``onnxruntime: TensorrtExecutionProvider, ...``."""
    lines = []
    for runtime in profile.runtimes:
        targets = runtime.execution_providers or runtime.devices or runtime.delegates
        suffix = f": {', '.join(targets)}" if targets else ""
        lines.append(escape(f"{runtime.name.value}{suffix}"))
    return lines


def _weights(symmetric: bool, per_channel: bool) -> str:
    scheme = "symmetric" if symmetric else "asymmetric"
    return f"{scheme}, {'per-channel' if per_channel else 'per-tensor'}"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# --- Rendering --------------------------------------------------------------------------------------


def _profiles_table(profiles: list[HardwareProfile]) -> Table:
    table = Table(title="Hardware profiles", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("Name", style="bold cyan", no_wrap=True)
    table.add_column("Arch", no_wrap=True)
    table.add_column("CPU")
    table.add_column("Cores", justify="right")
    table.add_column("Memory", justify="right", no_wrap=True)
    table.add_column("Accelerators")
    table.add_column("Default", no_wrap=True)
    table.add_column("Runtimes")
    for profile in profiles:
        accelerators = "\n".join(escape(a.name) for a in profile.accelerators) or _NONE
        table.add_row(
            profile.name,
            profile.architecture.value,
            _cpu(profile),
            str(profile.cpu.cores),
            _memory(profile.memory_mb),
            accelerators,
            _default(profile),
            ", ".join(r.name.value for r in profile.runtimes),
        )
    return table


def _key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column("Field", style="bold")
    table.add_column("Value")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _hardware_table(profile: HardwareProfile) -> Table:
    features = ", ".join(profile.cpu.features) or _NONE
    return _key_value_table(
        "Hardware",
        [
            ("architecture", profile.architecture.value),
            ("cpu", _cpu(profile)),
            ("cores", str(profile.cpu.cores)),
            ("cpu features", features),
            ("memory", _memory(profile.memory_mb)),
            ("threads", str(profile.threads)),
            ("max model size", _memory(profile.max_model_mb)),
        ],
    )


def _accelerators_table(profile: HardwareProfile) -> Table:
    table = Table(title="Accelerators", box=box.SIMPLE, title_justify="left")
    for column in ("Kind", "Name", "Precisions", "Peak TOPS", "Memory"):
        table.add_column(column)
    for accelerator in profile.accelerators:
        table.add_row(
            accelerator.kind.value,
            escape(accelerator.name),
            ", ".join(p.value for p in accelerator.precisions),
            f"{accelerator.peak_tops:g}" if accelerator.peak_tops else _NONE,
            _memory(accelerator.memory_mb),
        )
    return table


def _runtimes_table(profile: HardwareProfile) -> Table:
    table = Table(title="Runtimes, in order of preference", box=box.SIMPLE, title_justify="left")
    for column in ("#", "Runtime", "Format", "Providers / devices / delegates", "Options"):
        table.add_column(column)
    for index, runtime in enumerate(profile.runtimes, start=1):
        targets = runtime.execution_providers or runtime.devices or runtime.delegates
        options = ", ".join(f"{key}={value}" for key, value in runtime.options.items())
        table.add_row(
            str(index),
            runtime.name.value,
            runtime.format.value,
            escape(" → ".join(targets)) or _NONE,
            escape(options) or _NONE,
        )
    return table


def _conversion_table(profile: HardwareProfile) -> Table:
    quant, tolerance = profile.quantization, profile.tolerance

    def ordered(values: list[Any]) -> str:
        # The first entry is the converter's default: mark it.
        names = [v.value for v in values]
        return f"[bold]{names[0]}[/] (default)" + "".join(f", {n}" for n in names[1:])

    return _key_value_table(
        "Conversion",
        [
            ("formats", ordered(profile.formats)),
            ("precisions", ordered(profile.precisions)),
            ("weights", _weights(quant.symmetric_weights, quant.per_channel)),
            ("activations", "symmetric" if quant.symmetric_activations else "asymmetric"),
            ("full-integer I/O", _yes_no(quant.full_integer_io)),
            ("I/O dtypes", ", ".join(quant.io_dtypes)),
            ("static shapes", _yes_no(quant.static_shapes)),
            ("calibration samples", str(quant.calibration_samples)),
            ("max accuracy drop", f"{tolerance.max_accuracy_drop:g} accuracy point(s)"),
            ("min top-1 agreement", f"{tolerance.min_top1_agreement:g}"),
            ("min cosine", f"{tolerance.min_cosine:g}"),
        ],
    )


def _profile_view(profile: HardwareProfile, source: Path) -> Group:
    header = (
        f"[bold cyan]{profile.name}[/]\n{escape(profile.description)}\n[dim]{escape(display_path(source))}[/]"
    )
    parts: list[Any] = [Panel(header, expand=False), _hardware_table(profile)]
    if profile.accelerators:
        parts.append(_accelerators_table(profile))
    parts += [_runtimes_table(profile), _conversion_table(profile)]
    if profile.notes:
        notes = "\n".join(f"• {escape(note)}" for note in profile.notes)
        parts.append(Panel(notes, title="Notes", title_align="left"))
    return Group(*parts)


# --- Commands ---------------------------------------------------------------------------------------


@app.command("list")
def list_command(json_output: bool = typer.Option(False, "--json", help=_JSON_HELP)) -> None:
    """List every profile on the search path, with its default format and precision."""
    with _profile_errors():
        profiles = list_profiles()
    if json_output:
        print_json([profile.model_dump(mode="json") for profile in profiles])
        return
    console.print(_profiles_table(profiles))
    console.print(f"[dim]{len(profiles)} profiles; `edgefleet profiles show NAME` for details.[/]")


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help=f"A profile name, or a path to a {PROFILE_SUFFIX} file."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Show one profile in full: hardware, accelerators, runtimes, conversion defaults and notes."""
    with _profile_errors():
        source = resolve_profile_path(name)
        profile = load_profile_file(source)
    if json_output:
        print_json(profile.model_dump(mode="json"))
        return
    console.print(_profile_view(profile, source))


def _files_to_check(paths: list[Path]) -> list[Path]:
    if not paths:
        return list(find_profiles().values())
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob(f"*{PROFILE_SUFFIX}")) if path.is_dir() else [path])
    return files


@app.command("validate")
def validate_command(
    paths: list[Path] = typer.Argument(
        None, help="Profile files or directories; by default every profile on the search path."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON result per file."),
) -> None:
    """Check profile files against the schema; exit 1 when any is broken."""
    with _profile_errors():
        files = _files_to_check(paths or [])
        if not files:
            raise CLIError(
                "no profile files found", hint=f"pass {PROFILE_SUFFIX} files, or directories holding them"
            )
    results: list[dict[str, Any]] = []
    for file in files:
        try:
            profile = load_profile_file(file)
            results.append({"path": display_path(file), "name": profile.name, "ok": True, "problems": []})
        except ProfileError as exc:
            problems = [vars(p) for p in exc.problems] or [{"field": "", "message": exc.message}]
            results.append({"path": display_path(file), "name": None, "ok": False, "problems": problems})
            if not json_output:
                err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
    broken = sum(not r["ok"] for r in results)
    if json_output:
        print_json(results)
    else:
        for result in results:
            if result["ok"]:
                console.print(
                    f"[green]ok[/] {result['name']} [dim]{escape(result['path'])}[/]", highlight=False
                )
        summary = f"{len(results) - broken} of {len(results)} profile files valid"
        (err_console if broken else console).print(summary, highlight=False)
    if broken:
        raise typer.Exit(code=1)
