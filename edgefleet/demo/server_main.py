"""The demo's fleet server process: ``edgefleet server run`` with a quicker drift monitor.

``python -m edgefleet.demo.server_main --http ... --mqtt-listen ... --data-dir ...`` runs the
very server ``edgefleet server run`` runs (``fleet.prepare_server`` and ``fleet.serve``: SQLite,
the embedded broker, the rollout controller, the ingest and the drift monitor). Only the drift
monitor's cadence differs: it evaluates every few seconds over the last half minute, where a
production server evaluates every minute over the last hour, so that the demo's input shift
raises its alert within the demo's minutes. The data directory it leaves is an ordinary one:
``edgefleet server run --data-dir <it>`` serves it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

PORT_IN_USE_EXIT = 3
CONFIG_EXIT = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgefleet.demo.server_main", description=__doc__)
    parser.add_argument("--http", required=True, help="HOST:PORT for the REST API")
    parser.add_argument("--mqtt-listen", required=True, help="HOST:PORT for the embedded broker")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--trusted-key", action="append", default=[], type=Path)
    parser.add_argument("--drift-cohort", action="append", default=[], help="tag:K=V or profile:P")
    parser.add_argument("--drift-interval-s", type=float, default=2.0)
    parser.add_argument("--drift-lookback-s", type=float, default=30.0)
    parser.add_argument("--drift-min-samples", type=int, default=300)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from fleet.config import DriftSettings, ServerConfig
    from fleet.errors import FleetError, PortInUse
    from fleet.server import prepare_server, serve

    _configure_logging(args.log_level)
    try:
        drift = DriftSettings.from_options(
            cohorts=tuple(args.drift_cohort),
            thresholds={"min_samples": args.drift_min_samples},
            interval_s=args.drift_interval_s,
            debounce_s=min(1.0, args.drift_interval_s),
            min_gap_s=args.drift_interval_s,
            lookback_s=args.drift_lookback_s,
            per_profile=False,  # the demo watches its sites; the whole fleet is watched as well
        )
        config = ServerConfig.build(
            http=args.http,
            data_dir=args.data_dir,
            mqtt_listen=args.mqtt_listen,
            trusted_keys=tuple(args.trusted_key),
            drift=drift,
        )
        prepared = prepare_server(config)
    except PortInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return PORT_IN_USE_EXIT
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return CONFIG_EXIT
    logging.getLogger(__name__).info("fleet server ready on %s (demo drift cadence)", config.http.url())
    serve(prepared, log_level=args.log_level, access_log=False)
    return 0


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(
        level=numeric if isinstance(numeric, int) else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions", "alembic"):  # as `edgefleet server run` quiets them
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
