"""The real-model corpus, converted and served (``make test-corpus``; not part of ``make test``).

Each model of ``tests.support.corpus`` is converted with the converter's Python API for the
profiles its entry in ``tests/support/corpus_expectations.json`` names, and the outcome is held
to that table: which profiles package, in what format and precision, decided by which metric
(and at least as well as recorded there, less a small margin, and never below the limit), or
which fail and why. Every packaged bundle is then served in the agent's runtime
(``LocalInference``) and must pass its own golden check; every attempt the converter rejected
must say why.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter import ConversionReport, convert
from converter.workflow import ConversionFailed
from edge_agent.api import LocalInference
from edge_agent.ota.health import load_golden, run_golden
from models.bundle import generate_keypair, load_public_key, verify_bundle
from tests.support.corpus import EXPECTATIONS, MODELS

pytestmark = [pytest.mark.corpus, pytest.mark.integration, pytest.mark.slow]

EXPECTED: dict[str, dict[str, dict[str, Any]]] = json.loads(EXPECTATIONS.read_text())["models"]
# Run-to-run noise (thread counts, calibration order) on a metric recorded in the table.
METRIC_MARGIN = 0.05


def _convert(key: str, root: Path, profiles: list[str]) -> tuple[ConversionReport, Any]:
    model = MODELS[key]
    private, public = generate_keypair(root / "keys", "corpus")
    calibration, evaluation = model.data(root, model.calibration, model.evaluation)
    try:
        report = convert(
            model.source(),
            profiles,
            calibration,
            evaluation,
            root / "out",
            private,
            **model.convert_kwargs(),
        )
    except ConversionFailed as exc:  # some profile failed: the table says whether it should
        report = exc.report
    _keep_report(key, root / "out" / "report.json")
    return report, load_public_key(public)


def _keep_report(key: str, report: Path) -> None:
    """Copy the report to ``$EDGEFLEET_CORPUS_REPORTS/KEY.json``, for ``tests.support.corpus_record``."""
    keep = os.environ.get("EDGEFLEET_CORPUS_REPORTS")
    if keep and report.is_file():
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report, Path(keep) / f"{key}.json")


def test_every_model_in_the_table_is_in_the_corpus() -> None:
    assert set(EXPECTED) == set(MODELS)
    # Every model is planned for every profile: a profile refused before building would be a gap.
    statuses = {want["status"] for entries in EXPECTED.values() for want in entries.values()}
    assert statuses <= {"packaged", "degraded", "failed"}, statuses


def _planned(key: str) -> list[str]:
    return list(EXPECTED[key])


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_the_model_converts_and_serves_as_recorded(key: str, tmp_path: Path) -> None:
    report, public = _convert(key, tmp_path, _planned(key))
    by_profile = {result.profile: result for result in report.profiles}
    assert set(by_profile) == set(_planned(key))
    for profile in _planned(key):
        want = EXPECTED[key][profile]
        result = by_profile[profile]
        where = f"{key} on {profile}"
        for attempt in result.attempts:
            if attempt.decision not in ("packaged", "degraded"):
                label = f"{attempt.format.value} {attempt.precision.value} {attempt.calibration}"
                assert attempt.reasons, f"{where}: attempt {label} was {attempt.decision} without a reason"
        if want["status"] == "failed":
            assert result.status == "failed", (
                f"{where}: expected to fail ({want['reason']}), got {result.status}"
            )
            message = json.dumps(result.error)
            assert want["error_contains"] in message, f"{where}: unexpected failure {message}"
            continue
        assert result.status == want["status"], f"{where}: {result.status}: {result.error}"
        chosen = result.chosen
        assert chosen is not None and chosen.decided_by is not None
        assert (chosen.format.value, chosen.precision.value) == (want["format"], want["precision"]), where
        decided = chosen.decided_by
        assert decided.name == want["metric"], f"{where}: decided by {decided.name}"
        assert decided.value is not None
        assert decided.value >= want["value"] - METRIC_MARGIN, f"{where}: {decided.name} {decided.value}"
        checks = {f"{c.name}[{c.output}]": c.value for c in chosen.checks}
        for check, value in want["checks"].items():
            assert checks[check] >= value - METRIC_MARGIN, (
                f"{where}: {check} {checks[check]} (recorded {value})"
            )
        assert result.bundle is not None
        _serve_and_check_golden(Path(result.bundle.path), public, where, want.get("golden_fails"))


def _serve_and_check_golden(
    bundle: Path, public: Any, where: str, golden_fails: dict[str, str] | None = None
) -> None:
    """Install and load the bundle in the agent's engine, run its golden check the way the agent's
    update health check does (straight to the loaded version, which loops a static batch of 1
    over the golden samples), and serve one request through the protocol's ``infer``."""
    manifest = verify_bundle(bundle, [public]).manifest
    with LocalInference([bundle], trusted_keys=[public]) as api:
        (installed,) = api.installed
        golden = load_golden(installed.directory, installed.manifest)
        assert golden is not None, f"{where}: the bundle has no golden I/O"

        def run(feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
            with api.engine.repository.lease(manifest.name, manifest.version) as model:
                return model.execute(feeds, raw=False).outputs

        report = run_golden(run, golden)
        if golden_fails is not None:  # a recorded bug: the bundle fails its own check, for that reason
            assert not report.passed, f"{where}: the golden check passes now; update the table"
            assert golden_fails["error_contains"] in report.reason, f"{where}: {report.reason}"
            return
        assert report.passed, f"{where}: {report.reason}"
        first = {name: value[:1] for name, value in golden.inputs.items()}
        served = api.infer(manifest.name, first, version=manifest.version)
        assert set(served) == set(golden.expected), where
        for name, value in served.items():
            assert np.all(np.isfinite(value)), f"{where}: {name} served non-finite values"
