"""The updater's states and transitions, checked exhaustively (every state, every pair)."""

from __future__ import annotations

import itertools

import pytest

from edge_agent.ota import (
    HAPPY_PATH,
    TERMINAL,
    IllegalTransition,
    OtaState,
    ResumeAction,
    StepTimeouts,
    check_transition,
    next_on_failure,
    next_on_success,
    next_on_timeout,
    resume_action,
)

S = OtaState
BRIEF_STATES = (
    "assigned downloading verifying staged switching watching committed failed rolled_back timed_out"
)


def test_the_states_are_exactly_the_briefs_device_states() -> None:
    assert [state.value for state in OtaState] == BRIEF_STATES.split()


def test_the_happy_path_walks_every_non_failure_state_in_order() -> None:
    walked = [S.ASSIGNED]
    while walked[-1] not in TERMINAL:
        walked.append(next_on_success(walked[-1]))
    assert tuple(walked) == HAPPY_PATH
    assert walked[-1] is S.COMMITTED


@pytest.mark.parametrize("state", [S.ASSIGNED, S.DOWNLOADING, S.VERIFYING, S.STAGED])
def test_a_failure_before_the_switch_ends_in_failed(state: OtaState) -> None:
    assert next_on_failure(state) is S.FAILED


@pytest.mark.parametrize("state", [S.SWITCHING, S.WATCHING])
def test_a_failure_once_the_new_version_may_serve_rolls_back(state: OtaState) -> None:
    assert next_on_failure(state) is S.ROLLED_BACK


@pytest.mark.parametrize("state", [s for s in OtaState if s not in TERMINAL])
def test_every_step_can_time_out(state: OtaState) -> None:
    assert next_on_timeout(state) is S.TIMED_OUT


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_nothing_leaves_a_terminal_state(state: OtaState) -> None:
    for move in (next_on_success, next_on_failure, next_on_timeout):
        with pytest.raises(IllegalTransition):
            move(state)


EXPECTED = {
    S.ASSIGNED: {S.DOWNLOADING, S.FAILED, S.TIMED_OUT},
    S.DOWNLOADING: {S.VERIFYING, S.FAILED, S.TIMED_OUT},
    S.VERIFYING: {S.STAGED, S.FAILED, S.TIMED_OUT},
    S.STAGED: {S.SWITCHING, S.FAILED, S.TIMED_OUT},
    S.SWITCHING: {S.WATCHING, S.ROLLED_BACK, S.TIMED_OUT},
    S.WATCHING: {S.COMMITTED, S.ROLLED_BACK, S.TIMED_OUT},
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(OtaState, OtaState)))
def test_check_transition_allows_exactly_the_table(source: OtaState, target: OtaState) -> None:
    if target in EXPECTED.get(source, set()):
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition, match=f"from {source} to {target}"):
            check_transition(source, target)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.ASSIGNED, ResumeAction.RERUN),
        (S.DOWNLOADING, ResumeAction.RERUN),
        (S.VERIFYING, ResumeAction.RERUN),
        (S.STAGED, ResumeAction.RERUN),
        (S.SWITCHING, ResumeAction.ROLL_BACK),
        (S.WATCHING, ResumeAction.ROLL_BACK),
        (S.COMMITTED, ResumeAction.FINISH),
        (S.FAILED, ResumeAction.FINISH),
        (S.ROLLED_BACK, ResumeAction.FINISH),
        (S.TIMED_OUT, ResumeAction.FINISH),
    ],
)
def test_what_a_restart_does_in_each_state(state: OtaState, action: ResumeAction) -> None:
    assert resume_action(state) is action


def test_a_restart_never_rolls_back_where_the_old_version_still_served() -> None:
    # Exactly the states in which the new version may have been the default roll back.
    rolled = {state for state in OtaState if resume_action(state) is ResumeAction.ROLL_BACK}
    assert rolled == {
        state for state in OtaState if state not in TERMINAL and next_on_failure(state) is S.ROLLED_BACK
    }


def test_timeouts_per_state_add_the_watch_window_to_watching_only() -> None:
    timeouts = StepTimeouts(downloading=12.0, watching=5.0, finishing=7.0)
    assert timeouts.for_state(S.DOWNLOADING, watch_window_s=100) == 12.0
    assert timeouts.for_state(S.WATCHING, watch_window_s=100) == 105.0
    assert timeouts.for_state(S.ROLLED_BACK) == 7.0


@pytest.mark.parametrize("field", ["assigned", "downloading", "watching", "finishing"])
def test_a_timeout_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        StepTimeouts(**{field: 0.0})
