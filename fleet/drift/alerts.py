"""Alerts from drift reports: opened when a feature crosses an alert threshold, resolved when it
comes back below it, each change written to the ``alerts`` table and the audit log.

An alert is identified by (model, version, cohort, baseline, reference, feature); while it is open,
later evaluations update its value instead of opening another, so a drifting feature raises one
alert, not one per evaluation. The reference (the fingerprint of the bundle's bins) is part of it
because a version built for several hardware profiles has one bundle, and one report, per
reference in the same cohort. A feature with too few samples neither opens nor resolves anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.audit import record_audit
from fleet.db.models import Alert
from fleet.drift.analysis import DriftReport, FeatureComparison
from fleet.drift.thresholds import Level

DRIFT_KIND = "drift"
ACTOR = "system:drift"


@dataclass
class AlertChanges:
    opened: list[Alert] = field(default_factory=list)
    updated: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)

    def extend(self, other: AlertChanges) -> None:
        self.opened += other.opened
        self.updated += other.updated
        self.resolved += other.resolved


def open_alerts(session: Session, report: DriftReport) -> dict[str, Alert]:
    """The open drift alerts of this report's model version, cohort, baseline and reference, by feature."""
    rows = session.scalars(
        select(Alert).where(
            Alert.kind == DRIFT_KIND,
            Alert.model_name == report.model,
            Alert.model_version == report.version,
            Alert.cohort == report.cohort,
            Alert.resolved_at.is_(None),
        )
    ).all()
    return {str(row.feature): row for row in rows if _same_comparison(row.details or {}, report)}


def _same_comparison(details: dict[str, Any], report: DriftReport) -> bool:
    """The alert was raised by this baseline against this reference's bins.

    Without the reference, one bundle's clean report would resolve (or its drifting one update)
    another bundle's alert in the same cohort. An alert stored before the reference was recorded
    matches every reference: it cannot be told apart, and left unmatched it could never resolve.
    The first report that touches it either refreshes it, which stamps its reference on it, or
    resolves it; a bundle that still drifts then opens its own alert at its next report.
    """
    reference = details.get("reference")
    return details.get("against") == report.against and reference in (None, report.reference)


def sync_alerts(session: Session, report: DriftReport, now: datetime) -> AlertChanges:
    changes = AlertChanges()
    existing = open_alerts(session, report)
    for feature in report.features:
        alert = existing.get(feature.feature)
        if feature.level is Level.ALERT:
            if alert is None:
                changes.opened.append(_open(session, report, feature, now))
            else:
                _refresh(alert, report, feature, now)
                changes.updated.append(alert)
        elif alert is not None and feature.level in (Level.OK, Level.WARN):
            _resolve(session, alert, report, feature, now)
            changes.resolved.append(alert)
    session.flush()
    return changes


def _headline(feature: FeatureComparison) -> tuple[str, float, float]:
    """The breach that matters most: the alert-level one furthest past its threshold."""
    alerting = [b for b in feature.breaches if b.level is Level.ALERT] or list(feature.breaches)
    top = max(alerting, key=lambda b: b.value / b.threshold)
    return top.metric, top.value, top.threshold


def _details(report: DriftReport, feature: FeatureComparison, now: datetime) -> dict[str, Any]:
    return {
        "against": report.against,
        "reference": report.reference,
        "scores": feature.scores(),
        "breaches": [
            {"metric": b.metric, "value": b.value, "threshold": b.threshold, "level": b.level.value}
            for b in feature.breaches
        ],
        "samples": feature.samples,
        "baseline_samples": feature.baseline_samples,
        "devices": report.devices,
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "evaluated_at": now.isoformat(),
    }


def _message(report: DriftReport, feature: FeatureComparison) -> str:
    shown = ", ".join(
        f"{b.metric.upper() if b.metric != 'wasserstein' else 'Wasserstein'} {b.value:.3f} ≥ {b.threshold:g}"
        for b in feature.breaches
        if b.level is Level.ALERT
    )
    return (
        f"{report.model} {report.version}: {feature.feature} drifted in cohort {report.cohort} "
        f"against {report.against} ({shown}; {feature.samples} samples from {report.devices} device(s))"
    )


def _open(session: Session, report: DriftReport, feature: FeatureComparison, now: datetime) -> Alert:
    metric, value, threshold = _headline(feature)
    alert = Alert(
        created_at=now,
        kind=DRIFT_KIND,
        severity=Level.ALERT.value,
        model_name=report.model,
        model_version=report.version,
        cohort=report.cohort,
        feature=feature.feature,
        metric=metric,
        value=value,
        threshold=threshold,
        details={**_details(report, feature, now), "first_scores": feature.scores()},
        message=_message(report, feature),
    )
    session.add(alert)
    session.flush()
    record_audit(
        session,
        ACTOR,
        "drift.alert",
        f"{report.model}:{report.version}:{feature.feature}",
        details={
            "alert": alert.id,
            "cohort": report.cohort,
            "against": report.against,
            "metric": metric,
            "value": value,
            "threshold": threshold,
        },
        at=now,
    )
    return alert


def _refresh(alert: Alert, report: DriftReport, feature: FeatureComparison, now: datetime) -> None:
    metric, value, threshold = _headline(feature)
    alert.metric, alert.value, alert.threshold = metric, value, threshold
    first = (alert.details or {}).get("first_scores")
    alert.details = {**_details(report, feature, now), "first_scores": first}
    alert.message = _message(report, feature)


def _resolve(
    session: Session, alert: Alert, report: DriftReport, feature: FeatureComparison, now: datetime
) -> None:
    alert.resolved_at = now
    alert.details = {
        **(alert.details or {}),
        "resolved_scores": feature.scores(),
        "resolved_by": "drift monitor",
    }
    record_audit(
        session,
        ACTOR,
        "drift.resolve",
        f"{report.model}:{report.version}:{feature.feature}",
        details={
            "alert": alert.id,
            "cohort": report.cohort,
            "against": report.against,
            "scores": feature.scores(),
        },
        at=now,
    )


def alert_event(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON a webhook receives for an opened or resolved alert."""
    details = alert.details or {}
    return {
        "event": event,
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "severity": alert.severity,
            "model": alert.model_name,
            "version": alert.model_version,
            "cohort": alert.cohort,
            "against": details.get("against"),
            "feature": alert.feature,
            "metric": alert.metric,
            "value": alert.value,
            "threshold": alert.threshold,
            "scores": details.get("scores"),
            "message": alert.message,
            "created_at": alert.created_at.isoformat() if alert.created_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }


def resolve_manually(
    session: Session, alert: Alert, actor: Any, now: datetime, note: str | None = None
) -> Alert:
    """An operator closes an alert (it reopens if the feature still drifts at the next evaluation)."""
    alert.resolved_at = now
    alert.details = {
        **(alert.details or {}),
        "resolved_by": getattr(actor, "actor", str(actor)),
        "note": note,
    }
    record_audit(
        session, actor, "alert.resolve", str(alert.id), details={"note": note, "feature": alert.feature}
    )
    return alert


def latest(session: Session, *, open_only: bool, model: str | None, limit: int) -> Sequence[Alert]:
    query = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if open_only:
        query = query.where(Alert.resolved_at.is_(None))
    if model is not None:
        query = query.where(Alert.model_name == model)
    return session.scalars(query).all()
