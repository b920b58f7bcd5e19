"""A rollout's telemetry snapshot, out of the database: what the gates judge.

Cohorts, in the same time window: from the moment every device assigned so far committed (not
before the wave started or the rollout resumed) to now. Before that the traffic gates have no
data and wait; the failure rate judges at any time.

- **canary**: every device assigned so far (all waves up to the current one), counted by its
  progress (committed, failed); its traffic and drift on the *new* version. A device that has not
  finished and is offline is left out: it cannot answer, and it converges when it reconnects.
- **control**: targeted devices not assigned yet, on whatever version they run (not the new one).
- **baseline** (only when no control device reported, as in the last wave): the current wave's
  devices on their old version, in the ``baseline_lookback_s`` before the wave started.

The figures say what stands behind each cohort, so ``rollout status`` can name it truthfully:
``control_devices`` (targeted devices not assigned yet, whether or not they were compared: none
means there is no control at all) and ``baseline_window`` (whose old-version telemetry the
baseline is: the wave, the versions those devices ran before it, and the time window).

Latency is also split by hardware profile (the one each device's bundle was picked for, on its
``rollout_devices`` row; devices without one form one group), as a Raspberry Pi and a Jetson are
not comparable: per profile of the canary, its p95 on the new version against the p95 of the
control devices of that profile, or, when none of those reported latency, of the current wave's
devices of that profile on their old version (the baseline rule above). One metrics scan per
cohort gives the pooled and the per-profile figures.

Traffic comes from ``device_metrics`` (per-interval counts and latency histograms), drift from
``drift_windows`` compared with the bundles' reference statistics (``fleet.rollouts.figures``).
Windows are placed by when the server received them, so devices' clocks do not matter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.db.models import DeviceMetrics, DriftWindow
from fleet.drift.aggregate import add_windows
from fleet.rollouts.figures import OutputDrift, Traffic, output_drift
from fleet.rollouts.gates import CohortStats, ProfileLatency, Snapshot
from fleet.rollouts.models import Rollout, RolloutDevice
from fleet.rollouts.tracking import FAILURES, IN_PROGRESS, UPDATER_STATES, DeviceState
from models.stats import DriftWindow as StatsWindow
from models.stats import ReferenceStats

_CHUNK = 500
NO_PROFILE = "(no profile)"  # devices that report no hardware profile; never a valid profile name


class ReferenceSource(Protocol):
    """The reference statistics of a model version's bundles, by fingerprint (``ReferenceCatalog``)."""

    def for_version(self, session: Session, name: str, version: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class SnapshotSettings:
    min_drift_samples: int = 200
    baseline_lookback_s: float = 600.0


@dataclass(frozen=True)
class CohortFigures:
    """A cohort's stats and what stands behind them, for the audit log and ``rollout status``."""

    stats: CohortStats
    device_ids: tuple[str, ...]
    drift_samples: int = 0
    drift_features: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self.stats)
        data["error_rate"] = self.stats.error_rate
        data["drift_samples"] = self.drift_samples
        if self.drift_features:
            data["drift_features"] = self.drift_features
        return data


@dataclass(frozen=True)
class BaselineWindow:
    """Whose old-version telemetry the baseline is: the wave's devices, before the wave started."""

    wave: int
    versions: tuple[str, ...]  # what those devices ran before the wave (their previous versions)
    since: datetime
    until: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "versions": list(self.versions),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
        }


@dataclass(frozen=True)
class Gathered:
    snapshot: Snapshot
    canary: CohortFigures
    control: CohortFigures | None
    baseline: CohortFigures | None
    since: datetime
    control_devices: int = 0  # targeted devices not assigned yet (compared or not)
    baseline_window: BaselineWindow | None = None  # set when baseline figures were gathered

    def figures(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "bake_elapsed": self.snapshot.bake_elapsed,
            "drift_measured": self.snapshot.drift_measured,
            "canary": self.canary.as_dict(),
            "control": self.control.as_dict() if self.control else None,
            "control_devices": self.control_devices,
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "baseline_window": self.baseline_window.as_dict() if self.baseline_window else None,
            "latency_by_profile": [asdict(p) for p in self.snapshot.latency_by_profile],
        }


def canary_devices(tracks: Iterable[RolloutDevice], online: Mapping[str, bool]) -> list[RolloutDevice]:
    """Assigned devices, without the unfinished ones that are offline."""
    return [
        t
        for t in tracks
        if t.state in UPDATER_STATES and not (t.state in IN_PROGRESS and not online.get(t.device_id, False))
    ]


def judged_since(rollout: Rollout) -> datetime | None:
    """Where the gates' time window starts: when every device assigned so far had committed (and
    not before the wave started or the rollout resumed). Traffic while devices download, switch
    and watch is transitional (the device's own watch window judges that); None until then."""
    committed = rollout.wave_committed_at
    if committed is None:
        return None
    start = rollout.window_started_at or rollout.wave_started_at
    return committed if start is None or committed > start else start


def gather(
    session: Session,
    rollout: Rollout,
    tracks: Sequence[RolloutDevice],
    online: Mapping[str, bool],
    *,
    now: datetime,
    references: ReferenceSource | None,
    settings: SnapshotSettings = SnapshotSettings(),
) -> Gathered:
    window = judged_since(rollout)
    since = window or now
    model, target = rollout.model, rollout.version
    refs = _References(session, references, model)
    profiles = {t.device_id: t.profile or NO_PROFILE for t in tracks}
    canary_tracks = canary_devices(tracks, online)
    # Before the wave committed there is nothing to judge yet: no traffic for any cohort.
    judged = [t.device_id for t in canary_tracks] if window is not None else []

    traffic, canary_latency = traffic_by_profile(
        session, {d: profiles[d] for d in judged}, model, lambda v: v == target, since, None
    )
    drift = cohort_drift(session, judged, model, {target}, since, None, refs, settings)
    canary = CohortFigures(
        CohortStats(
            devices=len(canary_tracks),
            reporting=len(traffic.devices),
            committed=sum(t.state == DeviceState.COMMITTED for t in canary_tracks),
            failed=sum(t.state in FAILURES for t in canary_tracks),
            requests=traffic.requests,
            errors=traffic.errors,
            p95_ms=traffic.p95_ms,
            output_drift=drift.value,
        ),
        tuple(t.device_id for t in canary_tracks),
        drift.samples,
        drift.features,
    )
    control: CohortFigures | None = None
    baseline: CohortFigures | None = None
    window_of_baseline: BaselineWindow | None = None
    control_latency: dict[str, Traffic] = {}
    baseline_latency: dict[str, Traffic] = {}
    control_ids = [t.device_id for t in tracks if t.state == DeviceState.PENDING]
    if judged:
        if control_ids:
            control, control_latency = _old_version_cohort(
                session, control_ids, profiles, model, target, since, None, refs, settings
            )
        wave_ids = [t.device_id for t in canary_tracks if t.wave == rollout.wave]
        started = rollout.wave_started_at or since
        lookback = started - timedelta(seconds=settings.baseline_lookback_s)
        if (control is None or control.stats.reporting == 0) and wave_ids:
            baseline, baseline_latency = _old_version_cohort(
                session, wave_ids, profiles, model, target, lookback, started, refs, settings
            )
        else:
            # The control reported, but maybe not on every canary profile: those use their baseline.
            uncovered = {p for p in canary_latency if _p95(control_latency.get(p)) is None}
            own = {d: profiles[d] for d in wave_ids if profiles[d] in uncovered}
            if own:
                _, baseline_latency = traffic_by_profile(
                    session, own, model, lambda v: v != target, lookback, started
                )
        if baseline is not None or baseline_latency:
            before = {t.previous_version for t in canary_tracks if t.wave == rollout.wave}
            versions = tuple(sorted(v for v in before if v is not None))
            window_of_baseline = BaselineWindow(rollout.wave, versions, lookback, started)
    committed_at = rollout.wave_committed_at
    snapshot = Snapshot(
        canary=canary.stats,
        control=control.stats if control else None,
        baseline=baseline.stats if baseline else None,
        bake_elapsed=committed_at is not None and (now - committed_at).total_seconds() >= rollout.bake_s,
        drift_measured=bool(refs.of(target)),
        latency_by_profile=_latency_pairs(
            sorted({profiles[d] for d in judged}), canary_latency, control_latency, baseline_latency
        ),
    )
    return Gathered(snapshot, canary, control, baseline, since, len(control_ids), window_of_baseline)


def _latency_pairs(
    canary_profiles: Iterable[str],
    canary: Mapping[str, Traffic],
    control: Mapping[str, Traffic],
    baseline: Mapping[str, Traffic],
) -> tuple[ProfileLatency, ...]:
    """Per profile of the canary: its p95 and the same profile's control p95, else baseline p95."""
    pairs = []
    for profile in canary_profiles:
        reference, label = _p95(control.get(profile)), "control"
        if reference is None:
            reference, label = _p95(baseline.get(profile)), "baseline"
        pairs.append(ProfileLatency(profile, _p95(canary.get(profile)), reference, label))
    return tuple(pairs)


def _p95(traffic: Traffic | None) -> float | None:
    return traffic.p95_ms if traffic is not None else None


def _old_version_cohort(
    session: Session,
    device_ids: Sequence[str],
    profiles: Mapping[str, str],
    model: str,
    target: str,
    since: datetime,
    until: datetime | None,
    refs: _References,
    settings: SnapshotSettings,
) -> tuple[CohortFigures, dict[str, Traffic]]:
    """The devices' figures on any version but ``target``, and their traffic per hardware profile."""
    traffic, by_profile = traffic_by_profile(
        session, {d: profiles[d] for d in device_ids}, model, lambda v: v != target, since, until
    )
    versions = drift_versions(session, device_ids, model, since, until) - {target}
    drift = cohort_drift(session, device_ids, model, versions, since, until, refs, settings)
    stats = CohortStats(
        devices=len(device_ids),
        reporting=len(traffic.devices),
        requests=traffic.requests,
        errors=traffic.errors,
        p95_ms=traffic.p95_ms,
        output_drift=drift.value,
    )
    return CohortFigures(stats, tuple(device_ids), drift.samples, drift.features), by_profile


# --- queries ---------------------------------------------------------------------------------------


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def traffic_by_profile(
    session: Session,
    profiles: Mapping[str, str],
    model: str,
    version_matches: Any,
    since: datetime,
    until: datetime | None,
) -> tuple[Traffic, dict[str, Traffic]]:
    """The metrics for ``model`` at versions ``version_matches`` accepts, in the window, of the
    devices ``profiles`` maps to their hardware profile: pooled, and per profile (only profiles
    with metrics), from the same scan."""
    pooled = Traffic()
    by_profile: dict[str, Traffic] = {}
    for device_id, entry in _metric_entries(session, list(profiles), model, version_matches, since, until):
        pooled.add(device_id, entry)
        by_profile.setdefault(profiles[device_id], Traffic()).add(device_id, entry)
    return pooled, by_profile


def _metric_entries(
    session: Session,
    device_ids: Sequence[str],
    model: str,
    version_matches: Any,
    since: datetime,
    until: datetime | None,
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each ``ModelMetrics`` entry of ``model`` at an accepted version, with its device, in the window."""
    for chunk in _chunks(device_ids):
        query = select(DeviceMetrics.device_id, DeviceMetrics.payload).where(
            DeviceMetrics.device_id.in_(chunk), DeviceMetrics.received_at >= since
        )
        if until is not None:
            query = query.where(DeviceMetrics.received_at < until)
        for device_id, payload in session.execute(query):
            for entry in (payload or {}).get("models") or ():
                if entry.get("model") == model and version_matches(str(entry.get("version"))):
                    yield device_id, entry


def drift_versions(
    session: Session, device_ids: Sequence[str], model: str, since: datetime, until: datetime | None
) -> set[str]:
    versions: set[str] = set()
    for chunk in _chunks(device_ids):
        query = (
            select(DriftWindow.model_version)
            .distinct()
            .where(
                DriftWindow.model_name == model,
                DriftWindow.device_id.in_(chunk),
                DriftWindow.received_at >= since,
            )
        )
        if until is not None:
            query = query.where(DriftWindow.received_at < until)
        versions.update(session.scalars(query).all())
    return versions


def cohort_drift(
    session: Session,
    device_ids: Sequence[str],
    model: str,
    versions: Collection[str],
    since: datetime,
    until: datetime | None,
    refs: _References,
    settings: SnapshotSettings,
) -> OutputDrift:
    """The devices' output drift on ``versions`` of ``model``, each against its own bundle's reference."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    references: dict[str, ReferenceStats] = {}
    for version in versions:
        references.update(refs.of(version))
    if not references or not device_ids:
        return OutputDrift(None, 0, {})
    for chunk in _chunks(device_ids):
        query = select(DriftWindow.payload).where(
            DriftWindow.model_name == model,
            DriftWindow.model_version.in_(sorted(versions)),
            DriftWindow.device_id.in_(chunk),
            DriftWindow.received_at >= since,
        )
        if until is not None:
            query = query.where(DriftWindow.received_at < until)
        for payload in session.scalars(query):
            window = (payload or {}).get("window")
            if isinstance(window, dict) and window.get("reference") in references:
                grouped[str(window["reference"])].append(window)
    merged: dict[str, StatsWindow] = {}
    for fingerprint, windows in grouped.items():
        try:
            merged[fingerprint] = add_windows(windows)
        except (ValueError, KeyError, TypeError):
            continue  # malformed windows: the drift analysis logs them; the gate just has less data
    return output_drift(merged, references, min_samples=settings.min_drift_samples)


class _References:
    """Reference statistics per version of one model, looked up once per snapshot."""

    def __init__(self, session: Session, source: ReferenceSource | None, model: str) -> None:
        self.session = session
        self.source = source
        self.model = model
        self._cache: dict[str, dict[str, ReferenceStats]] = {}

    def of(self, version: str) -> dict[str, ReferenceStats]:
        if version not in self._cache:
            found = self.source.for_version(self.session, self.model, version) if self.source else {}
            self._cache[version] = {fingerprint: ref.stats for fingerprint, ref in found.items()}
        return self._cache[version]
