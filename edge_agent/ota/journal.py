"""The updater's journal: everything it must remember across a crash, in one small JSON file.

``JournalStore.save`` writes a temporary file, fsyncs it, renames it over the journal and fsyncs
the directory, so the file on disk is always either the previous journal or the new one, never
a mix, even after a power cut. The updater saves *before* each action (see ``states``).

What it holds:

- ``desired``: the newest desired state accepted (older revisions are ignored);
- ``models``: per model, the A/B slots (version, bundle sha256, extracted directory) and which
  one is active, i.e. committed and served after a restart;
- ``jobs``: per model, the latest update: its target, its state, the version it replaces, the
  slot it stages into, its attempt and the reason it ended. At most one job is not done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.ota.states import GAVE_UP, TERMINAL, OtaState
from models.mqtt_contract import DesiredModel, DesiredState

log = logging.getLogger("edgefleet.agent.ota")

JOURNAL_FORMAT: Final = 1
SlotName = Literal["a", "b"]
SLOT_NAMES: tuple[SlotName, SlotName] = ("a", "b")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlotRecord(_Record):
    """One extracted, verified bundle in a slot."""

    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str
    directory: str = Field(description="The extraction, relative to the agent's data directory.")
    staged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    committed: bool = Field(False, description="Once committed, a slot is a safe place to fall back to.")


class ModelSlots(_Record):
    active: SlotName | None = None
    slots: dict[SlotName, SlotRecord] = Field(default_factory=dict)

    @property
    def active_record(self) -> SlotRecord | None:
        return self.slots.get(self.active) if self.active is not None else None

    @property
    def spare(self) -> SlotName:
        """The slot an update stages into: never the active one."""
        return "b" if self.active == "a" else "a"


class Job(_Record):
    """One update of one model, from ``assigned`` to a terminal state."""

    model: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    url: str
    rollout_id: str | None = None
    allow_rollback: bool = False
    revision: int = Field(ge=0, description="The desired revision that asked for this target.")
    state: OtaState = OtaState.ASSIGNED
    reported: bool = Field(False, description="Whether ``state`` was handed to the reporter.")
    finished: bool = Field(False, description="Whether a terminal state's action ran to its end.")
    previous_version: str | None = None
    target_slot: SlotName = "a"
    attempt: int = Field(1, ge=1)
    retry: bool = Field(False, description="Terminal, but to be tried again (an interrupted watch).")
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def done(self) -> bool:
        return self.terminal and self.finished

    def targets(self, wanted: DesiredModel) -> bool:
        return self.sha256 == wanted.bundle_sha256 and self.version == wanted.version

    def gave_up_on(self, wanted: DesiredModel, revision: int) -> bool:
        """True when this job already failed for exactly this target at this revision.

        A failed target is not retried until the fleet sends a newer revision.
        """
        return self.state in GAVE_UP and not self.retry and self.targets(wanted) and self.revision == revision


class JournalData(_Record):
    format: Literal[1] = JOURNAL_FORMAT
    desired: DesiredState | None = None
    models: dict[str, ModelSlots] = Field(default_factory=dict)
    jobs: dict[str, Job] = Field(default_factory=dict)

    @property
    def revision(self) -> int | None:
        return self.desired.revision if self.desired is not None else None

    def slots_of(self, model: str) -> ModelSlots:
        return self.models.setdefault(model, ModelSlots())

    def running_job(self) -> Job | None:
        """The job not yet done (at most one): in progress, or terminal with its action unfinished."""
        return next((job for job in self.jobs.values() if not job.done), None)

    def latest_job(self) -> Job | None:
        return max(self.jobs.values(), key=lambda job: job.updated_at, default=None)


class JournalStore:
    """Reads and atomically replaces ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> JournalData:
        """The saved journal, or an empty one when there is none.

        A journal that cannot be read (a disk error, a hand edit) is moved aside and the updater
        starts afresh: the device then serves what its configuration names and converges again.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return JournalData()
        try:
            return JournalData.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            self.path.replace(aside)
            log.error(
                "the OTA journal %s cannot be read (%s); moved it to %s and starting afresh",
                self.path,
                str(exc).splitlines()[0],
                aside,
            )
            return JournalData()

    def save(self, data: JournalData) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        payload = data.model_dump_json(indent=1).encode("utf-8")
        with temporary.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        fsync_directory(self.path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
