"""The ready line: what the agent writes is what supervisors parse."""

from __future__ import annotations

from pathlib import Path

from edge_agent.ready import READY_LINE, READY_MARKER, ready_message


def test_the_ready_line_carries_both_listeners_and_the_facts_in_order() -> None:
    line = ready_message("127.0.0.1:8001", Path("/run/agent.sock"), models="digits:1.0.0", max_batch=8)

    assert line == "agent ready: grpc=127.0.0.1:8001 uds=/run/agent.sock models=digits:1.0.0 max_batch=8"
    match = READY_LINE.search(f"2026-11-27 INFO edgefleet.agent {line}")
    assert match is not None
    assert (match["tcp"], match["uds"]) == ("127.0.0.1:8001", "/run/agent.sock")


def test_a_listener_that_is_off_reads_as_a_dash() -> None:
    line = ready_message(None, None, fleet="lab")

    assert line.startswith(READY_MARKER)
    match = READY_LINE.search(line)
    assert match is not None
    assert (match["tcp"], match["uds"]) == ("-", "-")
