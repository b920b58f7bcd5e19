"""Grouping the registry's bundles into models and versions (newest first, by semver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.registry.catalog import group_models


@dataclass
class FakeBundle:
    name: str
    version: str
    profile: str
    format: str = "onnx"
    precision: str = "fp32"


def test_versions_sort_by_semver_not_text() -> None:
    bundles: list[Any] = [
        FakeBundle("m", "1.9.0", "pi"),
        FakeBundle("m", "1.10.0", "pi"),
        FakeBundle("m", "1.10.0-rc.1", "pi"),
        FakeBundle("m", "1.10.0", "jetson", "tflite", "int8"),
    ]
    (group,) = group_models(bundles)
    assert [v.version for v in group.versions] == ["1.10.0", "1.10.0-rc.1", "1.9.0"]
    assert group.latest == "1.10.0"
    assert [b.profile for b in group.versions[0].bundles] == ["jetson", "pi"]
    assert group.distinct("format") == ["onnx", "tflite"]
    assert group.distinct("precision") == ["fp32", "int8"]
    assert group.bundle_count == 4


def test_models_are_grouped_by_name() -> None:
    bundles: list[Any] = [
        FakeBundle("b", "1.0.0", "x"),
        FakeBundle("a", "2.0.0", "x"),
        FakeBundle("a", "1.0.0", "y"),
    ]
    groups = group_models(bundles)
    assert [g.name for g in groups] == ["a", "b"]
    assert [v.version for v in groups[0].versions] == ["2.0.0", "1.0.0"]
    assert group_models([]) == []
