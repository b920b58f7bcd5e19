"""`edgefleet keys`: create the Ed25519 key pair that signs bundles, and show key ids."""

from __future__ import annotations

from pathlib import Path

import typer

from edgefleet.cli._console import console, print_json
from edgefleet.cli.bundle import bundle_errors

app = typer.Typer(help="Create and inspect the Ed25519 keys that sign bundles.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command("generate")
def generate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the key files.", show_default=False),
    name: str = typer.Option("edgefleet", "--name", "-n", help="File name stem: NAME.key and NAME.pub.pem."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair of that name."),
    json_output: bool = _JSON,
) -> None:
    """Write a new key pair: NAME.key (private, mode 0600) and NAME.pub.pem (public)."""
    from models.bundle import generate_keypair, key_id, load_public_key

    with bundle_errors(json_output):
        private_path, public_path = generate_keypair(out, name, overwrite=force)
        kid = key_id(load_public_key(public_path))
    if json_output:
        print_json({"private_key": str(private_path), "public_key": str(public_path), "key_id": kid})
        return
    lines = [
        f"[bold green]✓ key pair {name}[/] (key id [bold]{kid}[/])",
        f"  private  {private_path}  [dim]keep it secret: it signs bundles[/]",
        f"  public   {public_path}  [dim]give it to agents and the server (--trusted-key)[/]",
    ]
    for line in lines:  # soft_wrap: paths stay whole, so they can be copied
        console.print(line, highlight=False, soft_wrap=True)


@app.command("show")
def show_command(
    key_file: Path = typer.Argument(..., help="A .pub.pem or .key file.", show_default=False),
    json_output: bool = _JSON,
) -> None:
    """Print the key id of a public or private key file (the id bundles name in manifest.sig)."""
    from models.bundle import key_id, load_private_key, load_public_key

    with bundle_errors(json_output):
        is_private = _looks_private(key_file)
        public = load_private_key(key_file).public_key() if is_private else load_public_key(key_file)
    kid = key_id(public)
    kind = "private" if is_private else "public"
    if json_output:
        print_json({"path": str(key_file), "kind": kind, "key_id": kid})
        return
    console.print(f"{key_file}: {kind} Ed25519 key, key id [bold]{kid}[/]", highlight=False, soft_wrap=True)


def _looks_private(path: Path) -> bool:
    try:
        return b"PRIVATE KEY" in path.read_bytes()[:4096]
    except OSError:
        return False  # load_public_key reports the missing or unreadable file properly
