"""`edgefleet server run`: the fleet server (REST API, registries, embedded or external MQTT broker)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from edgefleet.cli._console import err_console, fail

app = typer.Typer(help="Run the fleet server: REST API, device and model registries.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run the fleet server: REST API, device and model registries, bundle downloads."""


@app.command("run")
def run_command(
    http: str = typer.Option("127.0.0.1:8080", "--http", help="Address for the REST API (HOST:PORT)."),
    db: str | None = typer.Option(
        None,
        "--db",
        help="Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB "
        "(default: SQLite in the data directory).",
        envvar="EDGEFLEET_DB",
        show_default=False,
    ),
    data_dir: Path = typer.Option(
        Path("edgefleet-data"),
        "--data-dir",
        help="Bundles, the SQLite database and the admin token live here.",
    ),
    mqtt_listen: str | None = typer.Option(
        None,
        "--mqtt-listen",
        help="Run the embedded MQTT broker on HOST:PORT (default 127.0.0.1:1884).",
        show_default=False,
    ),
    mqtt: str | None = typer.Option(
        None,
        "--mqtt",
        help="Use an external broker instead: mqtt://HOST:PORT, or mqtt://USER:PASSWORD@HOST:PORT.",
        envvar="EDGEFLEET_MQTT",
        show_default=False,
    ),
    trusted_key: list[Path] = typer.Option(
        [],
        "--trusted-key",
        "-k",
        help="Public key (.pub.pem) or directory of them that pushed bundles must be signed by. Repeat.",
        show_default=False,
    ),
    admin_token_file: Path | None = typer.Option(
        None,
        "--admin-token-file",
        help="Take the admin token from this file (or write a new one there if it does not exist) "
        "instead of <data-dir>/admin.token.",
        show_default=False,
    ),
    max_bundle_bytes: int = typer.Option(
        4 * 1024**3, "--max-bundle-bytes", min=1, help="Refuse bundle uploads larger than this."
    ),
    mqtt_protocol: str | None = typer.Option(
        None,
        "--mqtt-protocol",
        envvar="EDGEFLEET_MQTT_PROTOCOL",
        help="MQTT version of the ingest: 5 or 3.1.1 (default 3.1.1 with the embedded broker, 5 with --mqtt).",
        show_default=False,
    ),
    drift_webhook: str | None = typer.Option(
        None,
        "--drift-webhook",
        envvar="EDGEFLEET_DRIFT_WEBHOOK",
        help="POST drift alerts as JSON to this URL.",
        show_default=False,
    ),
    drift_min_samples: int = typer.Option(
        500, "--drift-min-samples", min=1, help="Samples a feature needs before drift is judged."
    ),
    drift_psi_alert: float = typer.Option(0.25, "--drift-psi-alert", help="PSI that raises an alert."),
    drift_cohort: list[str] = typer.Option(
        [], "--drift-cohort", help="Also watch tag:K=V or profile:P against the reference; repeat."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every HTTP request."),
) -> None:
    """Serve the REST API (OpenAPI at /docs), migrate the database, and run or check the MQTT broker."""
    from fleet.config import DriftSettings, ServerConfig
    from fleet.errors import FleetError
    from fleet.server import prepare_server, serve

    _configure_logging(log_level)
    try:
        config = ServerConfig.build(
            http=http,
            db=db,
            data_dir=data_dir,
            mqtt_listen=mqtt_listen,
            mqtt=mqtt,
            trusted_keys=tuple(trusted_key),
            admin_token_file=admin_token_file,
            max_bundle_bytes=max_bundle_bytes,
            mqtt_protocol=mqtt_protocol,
            drift=DriftSettings.from_options(
                webhook_url=drift_webhook,
                cohorts=tuple(drift_cohort),
                thresholds={"min_samples": drift_min_samples, "psi_alert": drift_psi_alert},
            ),
        )
        prepared = prepare_server(config)
    except FleetError as exc:
        fail(exc.message, hint=exc.hint)
    context = prepared.context
    lines = [
        f"[bold green]edgefleet server[/] on {config.http.url()}  (API docs: {config.http.url()}/docs)",
        f"  database  {context.db.display_url}  (schema {prepared.upgrade.after}"
        + (f", migrated from {prepared.upgrade.before or 'empty'})" if prepared.upgrade.applied else ")"),
        f"  broker    {config.broker.description}",
        f"  bundles   {config.bundles_dir}  ({len(context.trusted_keys)} trusted key(s))",
    ]
    if prepared.admin.action == "created":
        lines.append(f"  admin     new admin token written to {prepared.admin.path} (mode 0600)")
    elif prepared.admin.action == "registered":
        lines.append(f"  admin     admin token from {prepared.admin.path} registered")
    for line in lines:
        err_console.print(line, highlight=False, soft_wrap=True)
    serve(prepared, log_level=log_level.lower(), access_log=access_log)


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        fail(f"--log-level {level!r} is not one of debug, info, warning, error")
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # amqtt, its state machine and Alembic are chatty at INFO (fleet.db logs what migrated).
    for noisy in ("amqtt", "transitions", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


if __name__ == "__main__":  # `python -m edgefleet.cli.server run ...`, as the tests' process helper may
    app()
