"""``/api/v1/drift``: drift reports per model version and cohort, and on-demand evaluations."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from fleet.api.alerts import alert_view
from fleet.api.deps import Operator, Viewer, db_session, get_context
from fleet.api.schemas import (
    API_PREFIX,
    DriftBreach,
    DriftEvaluation,
    DriftFeature,
    DriftReportInfo,
    ErrorBody,
)
from fleet.auth import Principal
from fleet.context import ServerContext
from fleet.db.types import utcnow
from fleet.drift.analysis import DriftReport
from fleet.drift.cohort import CohortError, parse_baseline, parse_cohort
from fleet.drift.service import DriftService
from fleet.drift.timerange import TimeRangeError, resolve_range
from fleet.errors import ApiError, Invalid

router = APIRouter(prefix=API_PREFIX, tags=["drift"])


def _service(context: ServerContext) -> DriftService:
    if context.drift is None:  # pragma: no cover - fleet.server always builds it
        raise ApiError(503, "unavailable", "drift analysis is not running on this server")
    return context.drift


def report_view(report: DriftReport) -> DriftReportInfo:
    return DriftReportInfo(
        model=report.model,
        version=report.version,
        cohort=report.cohort,
        against=report.against,
        reference=report.reference,
        since=report.since,
        until=report.until,
        devices=report.devices,
        windows=report.windows,
        samples=report.samples,
        baseline_devices=report.baseline_devices,
        baseline_windows=report.baseline_windows,
        baseline_samples=report.baseline_samples,
        level=report.level.value,
        note=report.note,
        thresholds=dict(report.thresholds),
        features=[
            DriftFeature(
                feature=f.feature,
                tensor=f.tensor,
                kind=f.kind,
                samples=f.samples,
                baseline_samples=f.baseline_samples,
                psi=f.psi,
                js=f.js,
                wasserstein=f.wasserstein,
                level=f.level.value,
                breaches=[
                    DriftBreach(metric=b.metric, value=b.value, threshold=b.threshold, level=b.level.value)
                    for b in f.breaches
                ],
                nonfinite=f.nonfinite,
                mean=f.mean,
                std=f.std,
                baseline_mean=f.baseline_mean,
                baseline_std=f.baseline_std,
            )
            for f in report.features
        ],
    )


@router.get(
    "/drift",
    response_model=list[DriftReportInfo],
    summary="Drift per model version: a cohort's merged windows against the reference or another cohort",
    responses={422: {"model": ErrorBody}},
)
def get_drift(
    model: str | None = Query(None, description="Only this model (default: every model with windows)"),
    version: str | None = Query(None, description="Only this version"),
    cohort: str = Query("all", description="all, tag:KEY=VALUE, profile:PROFILE or device:ID"),
    against: str = Query("reference", description="reference, or cohort:<cohort>"),
    since: str | None = Query(None, description="30m, 24h, 7d before now, or an ISO-8601 time (default 24h)"),
    until: str | None = Query(None, description="as since (default now)"),
    _: Principal = Viewer,
    context: ServerContext = Depends(get_context),
    session: Session = Depends(db_session),
) -> list[DriftReportInfo]:
    try:
        chosen = parse_cohort(cohort)
        baseline = parse_baseline(against)
        start, end = resolve_range(since, until, utcnow())
    except (CohortError, TimeRangeError) as exc:
        raise Invalid(
            str(exc),
            hint="e.g. ?cohort=tag:site=lab&against=cohort:tag:site=hq&since=24h",
        ) from None
    reports = _service(context).reports(
        session, since=start, until=end, model=model, version=version, cohort=chosen, baseline=baseline
    )
    return [report_view(r) for r in reports]


@router.post(
    "/drift/evaluate",
    response_model=DriftEvaluation,
    summary="Evaluate drift now (as the monitor does periodically): open and resolve alerts",
)
def evaluate_drift(_: Principal = Operator, context: ServerContext = Depends(get_context)) -> DriftEvaluation:
    evaluation = _service(context).evaluate()
    return DriftEvaluation(
        evaluated_at=evaluation.at,
        reports=len(evaluation.reports),
        opened=[alert_view(a) for a in evaluation.changes.opened],
        resolved=[alert_view(a) for a in evaluation.changes.resolved],
    )
