"""Commands on the ``desired`` topic: strict validation, rejection without a crash, revisions."""

from __future__ import annotations

import json
import threading

import pytest

from edge_agent.telemetry.commands import (
    QUEUE_SIZE,
    Accepted,
    CommandHandler,
    Ignored,
    Rejected,
    interpret_desired,
    preview,
)
from models.mqtt_contract import DesiredState

TOPIC = "edgefleet/v1/default/dev/desired"
SHA = "ab" * 32


def _desired(revision: int, **extra: object) -> bytes:
    body: dict[str, object] = {
        "kind": "desired",
        "revision": revision,
        "models": {
            "tiny": {"version": "1.2.0", "bundle_sha256": SHA, "bundle_size": 10, "bundle_url": "/b/1"}
        },
    }
    body.update(extra)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\xff\xfe not utf-8", "UTF-8 JSON"),
        (b"{not json", "UTF-8 JSON"),
        (b"[1, 2, 3]", "desired state"),
        (json.dumps({"kind": "reboot", "revision": 1}).encode(), "kind"),
        (json.dumps({"kind": "desired"}).encode(), "revision"),
        (json.dumps({"kind": "desired", "revision": -1}).encode(), "revision"),
        (_desired(1, surprise=True), "surprise"),
        (b"x" * (300 * 1024), "exceeds"),
    ],
)
def test_malformed_or_unknown_payloads_are_rejected(payload: bytes, fragment: str) -> None:
    outcome = interpret_desired(payload, last_revision=None)
    assert isinstance(outcome, Rejected)
    assert fragment in outcome.reason


def test_a_valid_state_is_accepted() -> None:
    outcome = interpret_desired(_desired(3), last_revision=2)
    assert isinstance(outcome, Accepted)
    assert outcome.desired.revision == 3
    assert outcome.desired.models["tiny"].version == "1.2.0"


def test_old_revisions_and_cleared_states_are_ignored() -> None:
    assert isinstance(interpret_desired(_desired(3), last_revision=3), Ignored)
    assert isinstance(interpret_desired(_desired(2), last_revision=3), Ignored)
    assert isinstance(interpret_desired(b"", last_revision=None), Ignored)


def test_preview_is_short_and_printable() -> None:
    text = preview(b"\x00\x01abc" + b"z" * 500)
    assert text.startswith("??abc") and text.endswith("…")
    assert len(text) < 130


class _Recorder:
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str, bytes]] = []
        self.desired: list[DesiredState] = []
        self.done = threading.Event()

    def on_rejected(self, topic: str, reason: str, payload: bytes) -> None:
        self.rejected.append((topic, reason, payload))
        self.done.set()

    def on_desired(self, desired: DesiredState) -> None:
        self.desired.append(desired)
        self.done.set()


def test_handler_reports_rejections_and_hands_on_new_states() -> None:
    recorder = _Recorder()
    handler = CommandHandler(
        on_desired=recorder.on_desired, on_rejected=recorder.on_rejected, desired_topic=TOPIC
    )
    assert isinstance(handler.handle(TOPIC, b"garbage"), Rejected)
    assert isinstance(handler.handle(TOPIC, _desired(5)), Accepted)
    assert isinstance(handler.handle(TOPIC, _desired(5)), Ignored)  # the broker redelivers retained state
    assert isinstance(handler.handle("edgefleet/v1/default/dev/other", _desired(9)), Rejected)
    assert (handler.rejected, handler.accepted, handler.ignored) == (2, 1, 1)
    assert [d.revision for d in recorder.desired] == [5]
    assert recorder.rejected[0][0] == TOPIC and recorder.rejected[0][2] == b"garbage"


def test_worker_survives_a_failing_callback_and_keeps_handling() -> None:
    recorder = _Recorder()

    def explode(desired: DesiredState) -> None:
        raise RuntimeError("updater bug")

    handler = CommandHandler(on_desired=explode, on_rejected=recorder.on_rejected, desired_topic=TOPIC)
    handler.start()
    try:
        handler.submit(TOPIC, _desired(1))
        handler.submit(TOPIC, b"{broken")
        assert recorder.done.wait(5)
    finally:
        handler.stop()
    assert handler.accepted == 1 and handler.rejected == 1


def test_submit_never_blocks_when_the_queue_is_full() -> None:
    recorder = _Recorder()
    handler = CommandHandler(on_desired=None, on_rejected=recorder.on_rejected, desired_topic=TOPIC)
    for revision in range(QUEUE_SIZE + 3):  # no worker running: the queue fills up
        handler.submit(TOPIC, _desired(revision))
    assert handler.rejected == 3
