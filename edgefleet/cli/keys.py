"""`edgefleet keys`: placeholder, filled in by its owner."""

import typer

app = typer.Typer(help="keys", no_args_is_help=True)
