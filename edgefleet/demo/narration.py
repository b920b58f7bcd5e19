"""The demo's voice: numbered, timed steps, and short lines under them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console, RenderableType


@dataclass(frozen=True)
class StepTiming:
    number: int
    title: str
    seconds: float


@dataclass
class Narrator:
    console: Console
    total: int
    started: float = field(default_factory=time.perf_counter)
    timings: list[StepTiming] = field(default_factory=list)

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        """Announce step ``number``, run the block, and say how long it took."""
        self.console.print()
        self.console.rule(f"[bold magenta]Step {number}/{self.total}[/]  [bold]{title}[/]", align="left")
        begun = time.perf_counter()
        yield
        seconds = time.perf_counter() - begun
        self.timings.append(StepTiming(number, title, seconds))
        self.console.print(f"[dim]  step {number} done in {seconds:.1f} s[/]", highlight=False)

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False, soft_wrap=True)

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✓[/] {text}", highlight=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        self.console.print(f"  [yellow]![/] {text}", highlight=False, soft_wrap=True)

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started
