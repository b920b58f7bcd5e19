"""Semantic versions of models and agents, and the anti-rollback rule.

A model's version never goes down on a device unless an operator asks for an explicit rollback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

# The regular expression from semver.org. re.ASCII keeps \d to 0-9 (not every Unicode digit), and
# it is applied with fullmatch: '$' alone would accept a trailing newline.
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)


class VersionError(ValueError):
    """A version string that is not semantic versioning 2.0.0."""


class RollbackRefused(ValueError):
    """An update would lower a model's version without an explicit rollback."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts above its pre-releases; numeric identifiers sort below alphanumeric ones.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        # Build metadata does not take part in precedence (SemVer §10).
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)


def parse_version(text: str) -> Version:
    """Parse a SemVer 2.0.0 string exactly (no 'v' prefix, no surrounding spaces)."""
    match = _SEMVER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise VersionError(f"{text!r} is not a semantic version such as 1.2.0 or 2.0.0-rc.1")
    major, minor, patch, pre, build = match.groups()
    return Version(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (), build or "")


def check_upgrade(current: str | None, candidate: str, *, allow_rollback: bool = False) -> None:
    """Refuse ``candidate`` when it is older than ``current``, unless the rollback is explicit.

    Re-installing the same version is allowed: a device that crashed mid-update must converge.
    """
    if current is None or allow_rollback:
        parse_version(candidate)
        return
    if parse_version(candidate) < parse_version(current):
        raise RollbackRefused(
            f"version {candidate} is older than the installed {current}; "
            "create an explicit rollback (edgefleet rollout create --rollback) to go back"
        )
