"""`edgefleet bundle`: look inside, verify and extract signed model bundles (.efb).

Every refusal exits with the error's own code (see docs/bundle-format.md), so a script can tell
a tampered model (15) from an untrusted key (14) without parsing text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from edgefleet.cli._console import console, fail, print_json

if TYPE_CHECKING:
    from models.bundle import BundleInspection, Manifest, TensorSpec

app = typer.Typer(
    help="Inspect, verify and extract signed model bundles (.efb).",
    no_args_is_help=True,
)

_BUNDLE_ARG = typer.Argument(..., help="The bundle file (.efb).", metavar="FILE", show_default=False)
_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
_TRUSTED = typer.Option(
    ...,
    "--trusted-key",
    "-k",
    help="A trusted public key (.pub.pem) or a directory of them; repeat for several. "
    "The environment variable takes a ':'-separated list.",
    envvar="EDGEFLEET_TRUSTED_KEYS",
    show_default=False,
)
_MAX_MEMBER = typer.Option(
    None, "--max-member-bytes", help="Refuse members larger than this (default 2 GiB).", min=1
)


@contextmanager
def bundle_errors(json_output: bool = False) -> Iterator[None]:
    """Turn a BundleError into its message (or JSON) and its own exit code, never a traceback."""
    from models.bundle import BundleError

    try:
        yield
    except BundleError as exc:
        if json_output:
            print_json({"ok": False, "error": exc.to_dict()})
            raise typer.Exit(code=exc.exit_code) from None
        fail(exc.message, hint=exc.hint, exit_code=exc.exit_code)


@app.command("inspect")
def inspect_command(bundle: Path = _BUNDLE_ARG, json_output: bool = _JSON) -> None:
    """Show a bundle's manifest: model, I/O signature, files, validation and benchmark.

    Needs no key, and checks the bundle's structure, but not its signature: use `verify` for that.
    """
    from models.bundle import inspect_bundle_details

    with bundle_errors(json_output):
        details = inspect_bundle_details(bundle)
    if json_output:
        print_json(
            {
                "path": str(details.path),
                "size": details.size,
                "signed": details.signed,
                "signer_key_id": details.signer_key_id,
                "signature_verified": False,
                "manifest": details.manifest.model_dump(mode="json"),
            }
        )
        return
    _print_inspection(details)


@app.command("verify")
def verify_command(
    bundle: Path = _BUNDLE_ARG,
    trusted_key: list[Path] = _TRUSTED,
    max_member_bytes: int | None = _MAX_MEMBER,
    json_output: bool = _JSON,
) -> None:
    """Check the signature against trusted keys, the layout, and every file's sha256."""
    from models.bundle import DEFAULT_MAX_MEMBER_BYTES, load_trusted_keys, verify_bundle

    with bundle_errors(json_output):
        keys = load_trusted_keys(_split_key_paths(trusted_key))
        verified = verify_bundle(bundle, keys, max_member_bytes=max_member_bytes or DEFAULT_MAX_MEMBER_BYTES)
    manifest = verified.manifest
    if json_output:
        print_json(
            {
                "ok": True,
                "path": str(verified.path),
                "key_id": verified.key_id,
                "sha256": verified.sha256,
                "size": verified.size,
                "name": manifest.name,
                "version": manifest.version,
                "files": len(manifest.files),
            }
        )
        return
    console.print(
        f"[bold green]✓ verified[/] {verified.path}: {manifest.name} {manifest.version}, "
        f"signed by key [bold]{verified.key_id}[/], {len(manifest.files)} file(s) intact",
        highlight=False,
        soft_wrap=True,
    )


@app.command("extract")
def extract_command(
    bundle: Path = _BUNDLE_ARG,
    dest: Path = typer.Option(..., "--dest", "-d", help="A new or empty directory.", show_default=False),
    trusted_key: list[Path] = _TRUSTED,
    max_member_bytes: int | None = _MAX_MEMBER,
    json_output: bool = _JSON,
) -> None:
    """Verify the bundle, then write its files and manifest into DEST."""
    from models.bundle import DEFAULT_MAX_MEMBER_BYTES, extract_bundle, load_trusted_keys

    with bundle_errors(json_output):
        keys = load_trusted_keys(_split_key_paths(trusted_key))
        verified = extract_bundle(
            bundle, dest, keys, max_member_bytes=max_member_bytes or DEFAULT_MAX_MEMBER_BYTES
        )
    if json_output:
        print_json(
            {
                "ok": True,
                "directory": str(verified.directory),
                "key_id": verified.key_id,
                "sha256": verified.sha256,
            }
        )
        return
    console.print(
        f"[bold green]✓ extracted[/] {verified.manifest.name} {verified.manifest.version} "
        f"into {verified.directory} (signed by key [bold]{verified.key_id}[/])",
        highlight=False,
        soft_wrap=True,
    )


def _split_key_paths(paths: list[Path]) -> list[Path]:
    # EDGEFLEET_TRUSTED_KEYS arrives as one value; split it like PATH.
    return [Path(part) for path in paths for part in str(path).split(os.pathsep) if part]


# --- human output ------------------------------------------------------------------------------


def _print_inspection(details: BundleInspection) -> None:
    manifest = details.manifest
    console.print(
        f"[bold]{manifest.name}[/] [cyan]{manifest.version}[/]  ({details.path})",
        highlight=False,
        soft_wrap=True,
    )
    if details.signer_key_id is not None:
        signature = f"key {details.signer_key_id} [dim](not verified: run `edgefleet bundle verify`)[/]"
    elif details.signed:
        signature = "[red]manifest.sig is unreadable[/]"
    else:
        signature = "[red]unsigned[/]"
    summary = _key_value_table("Bundle")
    rows: list[tuple[str, str]] = [
        ("profile", manifest.profile),
        ("format", manifest.format.value),
        ("precision", manifest.precision.value),
        ("runtime", _runtime_text(manifest)),
        ("model file", manifest.model_file),
        ("min agent version", manifest.min_agent_version),
        ("created", manifest.created.isoformat()),
        ("schema version", str(manifest.schema_version)),
        ("size", _human_bytes(details.size)),
        ("signature", signature),
    ]
    if manifest.reference_stats:
        rows.append(("reference stats", manifest.reference_stats))
    if manifest.golden is not None:
        golden = manifest.golden
        rows.append(
            (
                "golden",
                f"{golden.file} (atol {golden.atol:g}, rtol {golden.rtol:g}, "
                f"top-1 ≥ {golden.min_top1_agreement:g})",
            )
        )
    preprocessing = manifest.preprocessing.model_dump(exclude_defaults=True)
    if preprocessing:
        rows.append(("preprocessing", _compact(preprocessing)))
    rows.extend((f"label {key}", value) for key, value in sorted(manifest.labels.items()))
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)
    console.print(_signature_table(manifest))
    console.print(_files_table(manifest))
    for title, figures in (("Validation", manifest.validation), ("Benchmark", manifest.benchmark)):
        table = _key_value_table(title)
        for key, value in _flatten(figures):
            table.add_row(key, _figure(value))
        console.print(table if figures else f"[dim]{title}: none recorded[/]")


def _runtime_text(manifest: Manifest) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted(manifest.runtime.options.items()))
    return f"{manifest.runtime.name.value} ({options})" if options else manifest.runtime.name.value


def _signature_table(manifest: Manifest) -> Table:
    table = Table(title="I/O signature", title_justify="left")
    for column in ("", "name", "dtype", "shape", "layout", "quantization", "client dtype"):
        table.add_column(column)

    def row(direction: str, spec: TensorSpec) -> None:
        quant = spec.quantization
        quant_text = (
            f"{quant.dtype} scale={quant.scale:.6g} zero_point={quant.zero_point}" if quant else "[dim]—[/]"
        )
        shape = "[" + ", ".join("?" if d == -1 else str(d) for d in spec.shape) + "]"
        table.add_row(direction, spec.name, spec.dtype, shape, spec.layout, quant_text, spec.client_dtype)

    for spec in manifest.inputs:
        row("input", spec)
    for spec in manifest.outputs:
        row("output", spec)
    return table


def _files_table(manifest: Manifest) -> Table:
    table = Table(title="Files", title_justify="left")
    table.add_column("name")
    table.add_column("role")
    table.add_column("size", justify="right")
    table.add_column("sha256", overflow="fold")
    for name, entry in sorted(manifest.files.items()):
        table.add_row(name, entry.role, _human_bytes(entry.size), entry.sha256)
    return table


def _key_value_table(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    return table


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in sorted(data.items()):
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_figure(v) for v in value)
    return str(value)


def _compact(data: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_figure(v)}" for k, v in sorted(data.items()))


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
