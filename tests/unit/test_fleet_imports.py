"""The operator CLI talks to the server without loading the server: schemas and the client stay light."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = ("fastapi", "sqlalchemy", "alembic", "uvicorn", "amqtt", "starlette", "torch", "tensorflow")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_cli_client_and_schemas_do_not_import_the_server() -> None:
    loaded = _loaded_after("import fleet, fleet.api.schemas, fleet.devices, edgefleet.cli._client")
    assert "fleet" in loaded
    assert sorted(loaded & set(SERVER_SIDE)) == []


def test_fleet_public_names_resolve_lazily() -> None:
    code = "import fleet\nassert callable(fleet.create_app) and callable(fleet.redeem_enrollment)"
    assert "fastapi" in _loaded_after(code)  # asking for the app does load FastAPI
