"""Starting and stopping the rollout machinery with the server (``fleet.server`` calls these)."""

from __future__ import annotations

import logging
import os

from fleet.context import ServerContext
from fleet.drift.references import ReferenceCatalog
from fleet.ingest.consumer import BrokerEndpoint
from fleet.rollouts.controller import ControllerSettings, RolloutController
from fleet.rollouts.desired import DesiredPublisher

log = logging.getLogger(__name__)

INTERVAL_ENV = "EDGEFLEET_ROLLOUT_INTERVAL_S"


def controller_settings(environ: dict[str, str] | None = None) -> ControllerSettings:
    """The step interval can be tuned with ``EDGEFLEET_ROLLOUT_INTERVAL_S`` (default 1 s)."""
    env = os.environ if environ is None else environ
    raw = env.get(INTERVAL_ENV)
    if not raw:
        return ControllerSettings()
    try:
        interval = float(raw)
    except ValueError:
        interval = -1.0
    if not 0 < interval <= 3600:
        log.warning("%s=%r is not a number of seconds in (0, 3600]; using 1 s", INTERVAL_ENV, raw)
        return ControllerSettings()
    return ControllerSettings(interval_s=interval)


def start_rollouts(context: ServerContext) -> None:
    """The desired-state publisher (when the server talks MQTT) and the controller's loop."""
    config = context.config
    if config.ingest is not None:
        context.desired = DesiredPublisher(
            context.db,
            BrokerEndpoint.of(config.broker),
            protocol=config.ingest.protocol,
            client_id=f"{config.ingest.client_id}-desired",
        )
        context.desired.start()
    else:
        log.warning("no MQTT ingest: rollouts are tracked, but no desired state is published")
    references = context.drift.references if context.drift is not None else ReferenceCatalog(context.store)
    context.rollouts = RolloutController(
        context.db, references=references, notifier=context.desired, settings=controller_settings()
    )
    context.rollouts.start()


def stop_rollouts(context: ServerContext) -> None:
    """The controller first (no new decision), then the publisher."""
    if context.rollouts is not None:
        context.rollouts.stop()
        context.rollouts = None
    if context.desired is not None:
        context.desired.stop()
        context.desired = None
