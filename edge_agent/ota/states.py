"""The updater's states (BRIEF.md §4) and the rules between them. Pure: no I/O, no clocks.

An update walks the happy path ``assigned → downloading → verifying → staged → switching →
watching → committed``. Each state is written to the journal *before* the agent acts on it
(Mender's rule), so a restart always knows the last thing the agent set out to do:

==============  =============================================  ===================================
state           its action                                     a restart found here
==============  =============================================  ===================================
assigned        accept the target (nothing to undo)            runs it again
downloading     fetch into ``.part`` with HTTP Range resume    runs it again (resumes the bytes)
verifying       sha256, size, signature, anti-rollback         runs it again
staged          extract into the spare slot, load beside the   runs it again (the slot is rebuilt)
                current version, warm up, golden check
switching       make the new version the default               rolls back: counted as a crash
watching        error rate and p95 latency against the old     rolls back: counted as a crash
committed       make the slot active, unload the old version   finishes the action
failed          unload the new version, keep the old           finishes the action
rolled_back     make the old version the default again         finishes the action
timed_out       like rolled_back, after a step overran         finishes the action
==============  =============================================  ===================================

A failure before the switch ends in ``failed`` (the old version never stopped serving); a
failure once the new version may be serving ends in ``rolled_back``; a step that overruns its
timeout ends in ``timed_out`` wherever it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OtaState(StrEnum):
    ASSIGNED = "assigned"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    SWITCHING = "switching"
    WATCHING = "watching"
    COMMITTED = "committed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"


IDLE = "idle"
"""What the status reports before any update ever ran (``SlotState.state``)."""

HAPPY_PATH: tuple[OtaState, ...] = (
    OtaState.ASSIGNED,
    OtaState.DOWNLOADING,
    OtaState.VERIFYING,
    OtaState.STAGED,
    OtaState.SWITCHING,
    OtaState.WATCHING,
    OtaState.COMMITTED,
)
TERMINAL = frozenset({OtaState.COMMITTED, OtaState.FAILED, OtaState.ROLLED_BACK, OtaState.TIMED_OUT})
GAVE_UP = TERMINAL - {OtaState.COMMITTED}
BEFORE_SWITCH = frozenset({OtaState.ASSIGNED, OtaState.DOWNLOADING, OtaState.VERIFYING, OtaState.STAGED})
"""The old version is the default in these states: a failure cannot have touched what is served."""
NEW_MAY_SERVE = frozenset({OtaState.SWITCHING, OtaState.WATCHING})
"""The new version may be the default in these states: leaving them unsuccessfully rolls back."""


class IllegalTransition(ValueError):
    """A transition the state machine does not have (a bug in the updater, never an operator error)."""


def next_on_success(state: OtaState) -> OtaState:
    """The state after ``state``'s action succeeded."""
    if state in TERMINAL:
        raise IllegalTransition(f"{state} is terminal: nothing follows it")
    return HAPPY_PATH[HAPPY_PATH.index(state) + 1]


def next_on_failure(state: OtaState) -> OtaState:
    """The state after ``state``'s action failed (a refusal, an error, a bad verdict)."""
    if state in TERMINAL:
        raise IllegalTransition(f"{state} is terminal: it cannot fail into another state")
    return OtaState.ROLLED_BACK if state in NEW_MAY_SERVE else OtaState.FAILED


def next_on_timeout(state: OtaState) -> OtaState:
    """The state after ``state``'s action overran its timeout."""
    if state in TERMINAL:
        raise IllegalTransition(f"{state} is terminal: its action has no timeout to overrun")
    return OtaState.TIMED_OUT


def allowed_transitions(state: OtaState) -> frozenset[OtaState]:
    if state in TERMINAL:
        return frozenset()
    return frozenset({next_on_success(state), next_on_failure(state), next_on_timeout(state)})


def check_transition(source: OtaState, target: OtaState) -> None:
    if target not in allowed_transitions(source):
        raise IllegalTransition(f"the updater has no transition from {source} to {target}")


class ResumeAction(StrEnum):
    RERUN = "rerun"
    """Enter the state again: its action is idempotent and nothing served has changed."""
    ROLL_BACK = "roll_back"
    """The new version may have been serving when the agent died: that is a crash; go back."""
    FINISH = "finish"
    """A terminal state: run its (idempotent) action to completion, nothing else."""


def resume_action(state: OtaState) -> ResumeAction:
    """What a restarted agent does with a journal left in ``state``."""
    if state in TERMINAL:
        return ResumeAction.FINISH
    if state in NEW_MAY_SERVE:
        return ResumeAction.ROLL_BACK
    return ResumeAction.RERUN


@dataclass(frozen=True)
class StepTimeouts:
    """Seconds each state's action may take before the update is ``timed_out``.

    The watch window's own length is added to ``watching``; terminal actions (unloading a
    version drains its requests) have ``finishing``.
    """

    assigned: float = 30.0
    downloading: float = 1800.0
    verifying: float = 300.0
    staged: float = 600.0
    switching: float = 60.0
    watching: float = 60.0
    finishing: float = 120.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"the {name} timeout must be positive, got {value}")

    def for_state(self, state: OtaState, *, watch_window_s: float = 0.0) -> float:
        if state in TERMINAL:
            return self.finishing
        seconds: float = getattr(self, state.value)
        return seconds + watch_window_s if state is OtaState.WATCHING else seconds
