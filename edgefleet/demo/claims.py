"""What the demo says it showed, checked against what it recorded. Pure."""

from __future__ import annotations

from edgefleet.demo.settings import V1, V2, V3, plan_devices
from edgefleet.demo.summary import DemoSummary


def check_claims(summary: DemoSummary) -> list[str]:
    """What the demo says it showed, checked against what it recorded; the problems found. Pure."""
    problems = []
    wrong = [d.id for d in summary.devices if d.version != V2]
    if wrong or len(summary.devices) != len(plan_devices()):
        problems.append(f"not every device runs {V2}: {', '.join(wrong) or 'devices missing'}")
    by_version = {r.version: r for r in summary.rollouts}
    for version in (V1, V2):
        if version not in by_version or by_version[version].state != "completed":
            problems.append(f"the rollout of {version} did not complete")
    broken = by_version.get(V3)
    if broken is None or broken.state != "aborted":
        problems.append(f"the rollout of {V3} was not aborted")
    elif not set(broken.assigned) <= set(broken.canary):
        problems.append(f"{V3} reached devices beyond its canary: {', '.join(broken.assigned)}")
    shifted = f"tag:site={summary.shifted_site}"
    if not any(a.cohort == shifted for a in summary.alerts):
        problems.append(f"no drift alert on {shifted}")
    if any(v == V3 for row in summary.traffic for v in row.versions):
        problems.append(f"{V3} answered requests")
    return problems
