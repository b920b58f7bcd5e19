"""Step 9: one site's inputs shift, and the server's drift monitor notices by itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.table import Table

from edgefleet.cli._console import CLIError
from edgefleet.demo.settings import SHIFTED_SITE, SITES, V2
from edgefleet.demo.state import DemoRun

DRIFT_VIEW_WAIT_S = 15.0


def drift_step(run: DemoRun) -> None:
    api, traffic = run.need_api(), run.traffic
    assert traffic is not None
    cohort = f"tag:site={SHIFTED_SITE}"
    started = datetime.now(UTC)
    traffic.set_brightness(SHIFTED_SITE, run.settings.brightness)
    shifted = [s.id for s in run.specs if s.site == SHIFTED_SITE]
    run.narrator.say(
        f"the traffic to {', '.join(shifted)} is now {run.settings.brightness:g}x brighter "
        "(clipped to the model's [0, 1] range); the agents count it into the bundle's frozen drift bins"
    )
    deadline = time.monotonic() + run.settings.drift_timeout_s
    with run.console.status(f"waiting for the server's drift monitor to raise an alert on {cohort}…"):
        while True:
            alerts = [a for a in api.alerts("open") if a.cohort == cohort and a.created_at >= started]
            if alerts:
                break
            if time.monotonic() > deadline:
                raise CLIError(
                    f"no drift alert on {cohort} within {run.settings.drift_timeout_s:.0f} s",
                    hint=f"see `edgefleet drift show --cohort {cohort}` and {run.layout.server_log}",
                )
            time.sleep(1.0)
    waited = (datetime.now(UTC) - started).total_seconds()
    run.narrator.ok(f"the drift monitor raised an alert on {cohort} {waited:.0f} s after the shift:")
    for alert in alerts:
        run.narrator.say(f"  [red]alert {alert.id}[/]: {alert.message}")
    run.narrator.show(_drift_view(run, started))


def _drift_view(run: DemoRun, shifted_at: datetime) -> Table:
    """Both sites since the shift, per bundle: site b brighter than its reference, site a not.

    Waits (a few seconds at most) until every report has the samples the server judges with."""
    from edgefleet.demo.drift_view import drift_table, reference_profiles

    api = run.need_api()
    cohorts = [f"tag:site={site}" for site in SITES]
    deadline = time.monotonic() + DRIFT_VIEW_WAIT_S
    while True:
        reports = {cohort: api.drift(cohort, shifted_at, V2) for cohort in cohorts}
        thin = [r for rs in reports.values() for r in rs if r.samples < run.settings.drift_min_samples]
        if not thin or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    seconds = (datetime.now(UTC) - shifted_at).total_seconds()
    return drift_table(
        reports,
        reference_profiles(run.releases[V2]),
        title=f"drift in the {seconds:.0f} s since the shift, against each {V2} bundle's reference",
    )
