"""Run every benchmark module named ``bench_*.py`` (or those given on the command line)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown


def main(argv: list[str]) -> int:
    console = Console()
    names = argv or sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        console.rule(f"[bold]{name}")
        for md_path in module.run():
            console.print(Markdown(Path(md_path).read_text()))
            console.print(f"[dim]written: {md_path} and its .json[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
