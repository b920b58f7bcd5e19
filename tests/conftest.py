"""Fixtures shared by every test: private brokers, fresh databases, keys and reference bundles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import fresh_database


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto on a free port; ``stop()``/``start()``/``restart()`` work inside the test."""
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a brand-new PostgreSQL database, dropped after the test."""
    with fresh_database() as url:
        yield url
