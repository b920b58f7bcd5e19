"""The journal: atomic, durable saves, a clear fallback for an unreadable file, and its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.ota import Job, JournalData, JournalStore, ModelSlots, OtaState, SlotRecord
from models.mqtt_contract import DesiredModel, DesiredState

SHA_A = "a" * 64
SHA_B = "b" * 64


def _job(**overrides: object) -> Job:
    fields: dict[str, object] = {
        "model": "digits",
        "version": "2.0.0",
        "sha256": SHA_B,
        "size": 10,
        "url": "/api/v1/bundles/" + SHA_B,
        "revision": 3,
    }
    fields.update(overrides)
    return Job.model_validate(fields)


def _wanted(sha: str = SHA_B, version: str = "2.0.0") -> DesiredModel:
    return DesiredModel(version=version, bundle_sha256=sha, bundle_size=10, bundle_url="/x")


def test_a_saved_journal_loads_back_equal(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "ota" / "journal.json")
    data = JournalData(
        desired=DesiredState(revision=3, models={"digits": _wanted()}),
        models={
            "digits": ModelSlots(
                active="a",
                slots={
                    "a": SlotRecord(version="1.0.0", sha256=SHA_A, key_id="k", directory="slots/digits/a/x")
                },
            )
        },
        jobs={"digits": _job(state=OtaState.WATCHING, reported=True)},
    )
    store.save(data)
    loaded = store.load()
    assert loaded == data
    assert loaded.revision == 3
    assert [p.name for p in store.path.parent.iterdir()] == ["journal.json"]  # no temporary left behind


def test_a_missing_journal_is_an_empty_one(tmp_path: Path) -> None:
    loaded = JournalStore(tmp_path / "journal.json").load()
    assert loaded == JournalData()
    assert loaded.revision is None


@pytest.mark.parametrize("content", ["{not json", '{"format": 2}', '{"jobs": {"m": {"model": "m"}}}'])
def test_an_unreadable_journal_is_moved_aside_and_the_updater_starts_afresh(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "journal.json"
    path.write_text(content)
    assert JournalStore(path).load() == JournalData()
    assert not path.exists()
    aside = list(tmp_path.glob("journal.json.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_text() == content


def test_the_spare_slot_is_never_the_active_one() -> None:
    assert ModelSlots().spare == "a"
    assert ModelSlots(active="a").spare == "b"
    assert ModelSlots(active="b").spare == "a"


def test_a_failed_target_is_given_up_only_for_its_revision() -> None:
    failed = _job(state=OtaState.FAILED, finished=True)
    assert failed.gave_up_on(_wanted(), 3)
    assert not failed.gave_up_on(_wanted(), 4)  # a newer revision tries again
    assert not failed.gave_up_on(_wanted(sha=SHA_A), 3)  # another target is another job


def test_an_interrupted_watch_marked_for_retry_is_not_given_up() -> None:
    rolled = _job(state=OtaState.ROLLED_BACK, retry=True, finished=True)
    assert not rolled.gave_up_on(_wanted(), 3)
    assert not _job(state=OtaState.COMMITTED, finished=True).gave_up_on(_wanted(), 3)


def test_the_running_job_is_the_one_not_done() -> None:
    journal = JournalData(
        jobs={
            "a": _job(model="a", state=OtaState.COMMITTED, finished=True),
            "b": _job(model="b", state=OtaState.FAILED, finished=False),  # its action was cut short
        }
    )
    running = journal.running_job()
    assert running is not None and running.model == "b"
    journal.jobs["b"].finished = True
    assert journal.running_job() is None
    assert JournalData(jobs={"c": _job(model="c", state=OtaState.STAGED)}).running_job() is not None
