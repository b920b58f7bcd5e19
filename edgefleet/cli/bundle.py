"""`edgefleet bundle`: placeholder, filled in by its owner."""

import typer

app = typer.Typer(help="bundle", no_args_is_help=True)
