"""Which devices a drift comparison looks at, and what it compares them against. Pure.

A cohort is ``all``, ``tag:KEY=VALUE``, ``profile:PROFILE`` or ``device:ID``; devices are
placed by their registry record as it is now (current tags and profile). A baseline is
``reference`` (the bundle's frozen reference statistics) or ``cohort:<cohort>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fleet.devices.naming import check_tag, is_device_id

CohortKind = Literal["all", "tag", "profile", "device"]
REFERENCE = "reference"
_HINT = "write a cohort as all, tag:KEY=VALUE, profile:PROFILE or device:ID"


class CohortError(ValueError):
    """A cohort or baseline that does not parse; the message says how to write one."""


@dataclass(frozen=True)
class Cohort:
    kind: CohortKind = "all"
    key: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "tag":
            return f"tag:{self.key}={self.value}"
        return f"{self.kind}:{self.value}"


ALL = Cohort()


def parse_cohort(text: str | None) -> Cohort:
    value = (text or "all").strip()
    if value in ("", "all", "*"):
        return ALL
    kind, sep, rest = value.partition(":")
    if not sep or not rest:
        raise CohortError(f"cohort {text!r} is not KIND:VALUE; {_HINT}")
    if kind == "tag":
        key, eq, tag_value = rest.partition("=")
        if not eq:
            raise CohortError(f"cohort {text!r}: a tag cohort is tag:KEY=VALUE")
        try:
            check_tag(key, tag_value)
        except ValueError as exc:
            raise CohortError(f"cohort {text!r}: {exc}") from None
        return Cohort("tag", key, tag_value)
    if kind == "profile":
        return Cohort("profile", None, rest)
    if kind == "device":
        if not is_device_id(rest):
            raise CohortError(f"cohort {text!r}: {rest!r} is not a device id")
        return Cohort("device", None, rest)
    raise CohortError(f"cohort {text!r}: unknown kind {kind!r}; {_HINT}")


@dataclass(frozen=True)
class Baseline:
    """What the cohort is compared against: the reference (``cohort`` None) or another cohort."""

    cohort: Cohort | None = None

    @property
    def is_reference(self) -> bool:
        return self.cohort is None

    def __str__(self) -> str:
        return REFERENCE if self.cohort is None else f"cohort:{self.cohort}"


def parse_baseline(text: str | None) -> Baseline:
    value = (text or REFERENCE).strip()
    if value == REFERENCE:
        return Baseline()
    kind, sep, rest = value.partition(":")
    if kind != "cohort" or not sep:
        raise CohortError(
            f"--against {text!r} is neither 'reference' nor 'cohort:<cohort>'",
        )
    return Baseline(parse_cohort(rest))
