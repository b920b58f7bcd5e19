"""`edgefleet profiles`: placeholder, filled in by its owner."""

import typer

app = typer.Typer(help="profiles", no_args_is_help=True)
