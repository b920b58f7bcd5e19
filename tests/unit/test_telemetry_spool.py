"""The spool: seq numbering that survives restarts, the byte limit with priorities, drop reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.telemetry.spool import (
    DROP_ORDER,
    MAX_LISTED_DROPS,
    ROW_OVERHEAD_BYTES,
    Spool,
    SpoolError,
    seq_ranges,
)
from models.mqtt_contract import Channel

TOPIC = "edgefleet/v1/default/dev/x"
BIG = 2500  # bytes: a few of these exceed the smallest spool allowed


def _payload(size: int, seq: int) -> bytes:
    head = f'{{"seq":{seq},"pad":"'.encode()
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def _add(spool: Spool, channel: Channel, size: int = 100) -> int:
    return spool.append(channel, TOPIC, lambda seq: _payload(size, seq))


def _row_bytes(size: int) -> int:
    return size + len(TOPIC) + ROW_OVERHEAD_BYTES


def test_seqs_start_at_zero_and_grow(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    seqs = [_add(spool, Channel.METRICS) for _ in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    messages = spool.read_after(-1, 10)
    assert [m.seq for m in messages] == seqs
    assert all(m.payload.startswith(f'{{"seq":{m.seq},'.encode()) for m in messages)
    assert spool.count == 5 and spool.bytes_used == 5 * _row_bytes(100)


def test_seq_survives_a_restart_even_with_an_empty_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for _ in range(3):
        _add(spool, Channel.DRIFT)
    assert spool.delete([0, 1, 2]) == 3
    spool.close()
    reopened = Spool(tmp_path / "s.db")
    assert reopened.count == 0
    assert _add(reopened, Channel.DRIFT) == 3  # never reused, so the server's dedup stays correct


def test_unacknowledged_messages_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for channel in (Channel.STATUS, Channel.METRICS, Channel.DRIFT):
        _add(spool, channel)
    spool.delete([1])
    spool.close()
    reopened = Spool(tmp_path / "s.db")
    assert [(m.seq, m.channel) for m in reopened.read_after(-1, 10)] == [
        (0, Channel.STATUS),
        (2, Channel.DRIFT),
    ]
    assert reopened.bytes_used == 2 * _row_bytes(100)


def test_read_after_pages_in_seq_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for _ in range(7):
        _add(spool, Channel.EVENTS)
    assert [m.seq for m in spool.read_after(2, 3)] == [3, 4, 5]
    assert [m.seq for m in spool.read_after(5, 3)] == [6]
    assert spool.read_after(6, 3) == []


def test_oldest_metrics_go_first_when_full(tmp_path: Path) -> None:
    row = _row_bytes(BIG)
    spool = Spool(tmp_path / "s.db", max_bytes=10 * row)
    kinds = [Channel.METRICS, Channel.DRIFT] * 5  # exactly full: 5 metrics and 5 drift windows
    seqs = [_add(spool, kind, BIG) for kind in kinds]
    assert spool.peek_drops().total == 0
    newest = [_add(spool, Channel.DRIFT, BIG) for _ in range(3)]
    kept = {m.seq for m in spool.read_after(-1, 100)}
    metrics_seqs = [s for s, k in zip(seqs, kinds, strict=True) if k == Channel.METRICS]
    assert kept == set(seqs) - set(metrics_seqs[:3]) | set(newest)
    report = spool.peek_drops()
    assert report.counts == {"metrics": 3}
    assert report.seqs == tuple(metrics_seqs[:3])
    assert spool.bytes_used <= 10 * row


def test_other_channels_go_in_drop_order_once_metrics_are_gone(tmp_path: Path) -> None:
    row = _row_bytes(BIG)
    spool = Spool(tmp_path / "s.db", max_bytes=5 * row)
    by_channel = {channel: _add(spool, channel, BIG) for channel in reversed(DROP_ORDER)}
    for expected_victim in DROP_ORDER[:-1]:
        _add(spool, Channel.OTA, BIG)
        assert by_channel[expected_victim] not in {m.seq for m in spool.read_after(-1, 100)}
    assert spool.peek_drops().counts == {"metrics": 1, "status": 1, "events": 1, "drift": 1}
    # Only OTA transitions left: now the oldest of those goes.
    _add(spool, Channel.OTA, BIG)
    assert by_channel[Channel.OTA] not in {m.seq for m in spool.read_after(-1, 100)}


def test_a_new_metrics_message_is_the_one_dropped_among_higher_priorities(tmp_path: Path) -> None:
    row = _row_bytes(BIG)
    spool = Spool(tmp_path / "s.db", max_bytes=3 * row)
    drift = [_add(spool, Channel.DRIFT, BIG) for _ in range(3)]
    metrics = _add(spool, Channel.METRICS, BIG)
    assert [m.seq for m in spool.read_after(-1, 10)] == drift
    assert spool.peek_drops().seqs == (metrics,)


def test_a_message_larger_than_the_spool_is_dropped_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=8192)
    kept = _add(spool, Channel.METRICS, 100)
    huge = _add(spool, Channel.DRIFT, 20_000)
    assert [m.seq for m in spool.read_after(-1, 10)] == [kept]
    assert spool.peek_drops().seqs == (huge,)


def test_claimed_drops_are_reported_once_and_survive_restarts_until_then(tmp_path: Path) -> None:
    row = _row_bytes(BIG)
    spool = Spool(tmp_path / "s.db", max_bytes=2 * row)
    for _ in range(5):
        _add(spool, Channel.METRICS, BIG)
    spool.close()
    reopened = Spool(tmp_path / "s.db", max_bytes=2 * row)
    with reopened.batch() as batch:
        report = batch.claim_drops()
    assert report.counts == {"metrics": 3} and report.seqs == (0, 1, 2)
    assert report.seq_ranges() == [(0, 2)]
    with reopened.batch() as batch:
        assert not batch.claim_drops()


def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    _add(spool, Channel.STATUS)

    def broken(seq: int) -> bytes:
        raise RuntimeError("payload could not be built")

    with pytest.raises(RuntimeError), spool.batch() as batch:
        batch.append(Channel.METRICS, TOPIC, lambda seq: _payload(50, seq))
        batch.append(Channel.METRICS, TOPIC, broken)
    assert spool.count == 1
    assert _add(spool, Channel.STATUS) == 1  # the rolled-back seqs are handed out again, never skipped


def test_will_seq_is_reserved_once_and_kept_until_announced(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    will = spool.will_seq()
    assert spool.will_seq() == will
    spool.close()
    reopened = Spool(tmp_path / "s.db")
    assert reopened.will_seq() == will  # a crash before the birth leaves no unexplained gap
    with reopened.batch() as batch:
        birth = batch.append(Channel.STATUS, TOPIC, lambda seq: _payload(50, seq))
        batch.release_will_seq(will)
    assert birth > will
    assert reopened.will_seq() > birth


def test_refused_messages_are_dropped_and_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    seqs = [_add(spool, Channel.EVENTS) for _ in range(3)]
    assert spool.discard([seqs[1], 99]) == 1
    assert [m.seq for m in spool.read_after(-1, 10)] == [seqs[0], seqs[2]]
    assert spool.peek_drops().counts == {"events": 1}


def test_listed_drops_are_capped_but_all_are_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=4096)
    total = MAX_LISTED_DROPS + 5
    with spool.batch() as batch:
        for _ in range(total):
            batch.append(Channel.METRICS, TOPIC, lambda seq: _payload(5000, seq))
    report = spool.peek_drops()
    assert report.total == total
    assert len(report.seqs) == MAX_LISTED_DROPS and report.unlisted == 5


def test_listeners_hear_about_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    heard: list[int] = []
    spool.add_listener(lambda: heard.append(spool.count))
    _add(spool, Channel.METRICS)
    _add(spool, Channel.METRICS)
    assert heard == [1, 2]


def test_seq_ranges_compress_runs() -> None:
    assert seq_ranges([5, 1, 2, 3, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert seq_ranges([]) == []


def test_an_unreadable_file_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(SpoolError, match="move it aside"):
        Spool(path)


def test_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4096"):
        Spool(tmp_path / "s.db", max_bytes=100)
