"""The updater: converges the device to its desired state, one explicit state at a time.

It reads like Mender's client. Each state (``states.OtaState``) is a name with an action
(``actions.Actions``: the method of the same name to enter it; ``commit`` or ``roll_back`` for
the terminal ones), and the journal records the state *before* its action runs. Every
transition is handed to ``report`` (an ``OtaPayload``: the agent spools it and sends it on the
device's ``ota`` topic) once: a ``reported`` flag in the journal keeps a restart from reporting
a state twice, or not at all.

One worker thread runs one update (a *job*) at a time. Each action runs in its own thread so the
worker can enforce the state's timeout (``StepTimeouts``) even when a runtime hangs; actions that
wait (the download, the watch window) stop early when cancelled. A failed action ends the job in
``failed`` before the switch and ``rolled_back`` after it; one that overruns, ``timed_out``.

- ``on_desired(state)``: a newer revision replaces the desired state (an older or equal one is
  ignored). If it no longer wants the target of the job in progress, that job is cancelled: it
  fails (or rolls back) with the reason, and the next job starts for the new target.
- ``resume()``: at start-up, before the agent serves: the active slots are verified again and
  loaded as the default versions; a job that was interrupted continues (``states.resume_action``):
  before the switch it runs its state again; after the switch the new version is not trusted (the
  agent died while it served: a crash), so the job rolls back and, within ``max_attempts``, tries
  again; a terminal state's action is finished.
- A failed target is not tried again until a newer desired revision arrives.

``EDGEFLEET_OTA_PAUSE_AT=<state>`` (a test hook) makes the worker stop right after it journaled
and reported that state, until the agent stops: a test can then kill the agent there.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.ota.actions import Actions, ActionSettings, Cancelled, StepFailed, StepRun
from edge_agent.ota.download import Credentials, DownloadCancelled, Downloader, DownloadSettings
from edge_agent.ota.engine import DefaultPinning
from edge_agent.ota.journal import Job, JournalData, JournalStore, ModelSlots, SlotName, SlotRecord
from edge_agent.ota.slots import SlotStore
from edge_agent.ota.states import (
    IDLE,
    TERMINAL,
    OtaState,
    ResumeAction,
    StepTimeouts,
    check_transition,
    next_on_failure,
    next_on_success,
    resume_action,
)
from edge_agent.ota.watch import WatchObserver, WatchPolicy
from edge_agent.serving import InferenceEngine, InstalledBundle, ServingError
from edgefleet import __version__
from models.bundle import BundleError
from models.mqtt_contract import DesiredState, OtaPayload, SlotState

log = logging.getLogger("edgefleet.agent.ota")

PAUSE_ENV = "EDGEFLEET_OTA_PAUSE_AT"
JOURNAL_FILE = Path("ota") / "journal.json"
DOWNLOADS_DIR = Path("ota") / "downloads"
PAUSE_MARKER = "ota paused at"

Reporter = Callable[[OtaPayload], None]
"""Told about every transition. ``seq`` is 0: whoever spools the payload numbers it."""


@dataclass(frozen=True)
class UpdaterSettings:
    fleet_url: str | None = None
    """The fleet server's base URL, for desired states whose bundle URLs are relative."""
    credentials: Credentials | None = None
    """HTTP Basic credentials for bundle downloads (the device's MQTT user name and password)."""
    download: DownloadSettings = field(default_factory=DownloadSettings)
    watch: WatchPolicy = field(default_factory=WatchPolicy)
    timeouts: StepTimeouts = field(default_factory=StepTimeouts)
    warmup_runs: int = 3
    max_attempts: int = 3
    """Tries of one target when the agent restarts in its watch window (a crash or a stop)."""
    agent_version: str = __version__

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.max_attempts < 1:
            raise ValueError("warmup_runs must not be negative and max_attempts must be at least 1")


class Updater:
    """Converges one agent's models to the desired state. Thread-safe."""

    def __init__(
        self,
        engine: InferenceEngine,
        *,
        data_dir: Path,
        trusted_keys: Sequence[Ed25519PublicKey],
        device_id: str,
        report: Reporter,
        settings: UpdaterSettings = UpdaterSettings(),
        on_loaded: Callable[[InstalledBundle], None] | None = None,
        on_serving_changed: Callable[[], object] | None = None,
        pause_at: str | None = None,
    ) -> None:
        repository = engine.repository
        if not isinstance(repository, DefaultPinning):
            raise TypeError(
                "the updater needs an engine whose repository can pin a default version: "
                "build it with InferenceEngine.create"
            )
        self.engine = engine
        self.data_dir = Path(data_dir)
        self.trusted_keys = list(trusted_keys)
        self.device_id = device_id
        self.settings = settings
        self._report_to = report
        self._pause_at = _pause_state(pause_at if pause_at is not None else os.environ.get(PAUSE_ENV))
        self.observer = WatchObserver()
        engine.add_observer(self.observer)
        self._store = JournalStore(self.data_dir / JOURNAL_FILE)
        self._journal = self._store.load()
        self._lock = threading.RLock()
        self._actions = Actions(
            engine,
            repository,
            observer=self.observer,
            slots=SlotStore(self.data_dir, self.trusted_keys),
            book=_JournalSlots(self._journal, self._lock, self._save),
            downloader=Downloader(settings.download, credentials=settings.credentials),
            downloads_dir=self.data_dir / DOWNLOADS_DIR,
            trusted_keys=self.trusted_keys,
            settings=ActionSettings(
                fleet_url=settings.fleet_url,
                watch=settings.watch,
                warmup_runs=settings.warmup_runs,
                agent_version=settings.agent_version,
            ),
            on_loaded=on_loaded,
            on_serving_changed=on_serving_changed,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._run: StepRun | None = None
        self._thread: threading.Thread | None = None

    # --- the agent's side -----------------------------------------------------------------------

    def resume(self) -> None:
        """Serve the active slots, take up an interrupted job, and start converging."""
        with self._lock:
            for name in sorted(self._journal.models):
                self._serve_active_slot(name)
            job = self._journal.running_job()
            if job is not None and resume_action(job.state) is ResumeAction.ROLL_BACK:
                # The new version was (maybe) serving when the agent died: not to be trusted.
                interrupted = job.state
                job.retry = job.attempt < self.settings.max_attempts
                job.reason = (
                    f"the agent restarted while {interrupted}; the new version is not trusted "
                    f"(attempt {job.attempt} of {self.settings.max_attempts})"
                )
                self._transition(job, OtaState.ROLLED_BACK, {"interrupted_in": str(interrupted)})
            elif job is not None:
                log.info("resuming the update of %s to %s in state %s", job.model, job.version, job.state)
            for done in self._journal.jobs.values():
                if done.done and not done.reported and self._report(done):  # lost before the restart
                    done.reported = True
                    self._save()
        self._thread = threading.Thread(target=self._loop, name="ota-updater", daemon=True)
        self._thread.start()

    def on_desired(self, desired: DesiredState) -> None:
        """Converge to ``desired`` if it is newer than the last one accepted."""
        with self._lock:
            known = self._journal.revision
            if known is not None and desired.revision <= known:
                log.info("desired revision %d ignored: revision %d is already known", desired.revision, known)
                return
            self._journal.desired = desired
            if self._run is not None:
                self._align(self._run)
            self._save()
            self._idle.clear()
        log.info("desired revision %d accepted: %s", desired.revision, _describe_desired(desired))
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step (an interrupted job continues after the next start)."""
        self._stop.set()
        with self._lock:
            if self._run is not None:
                self._run.cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the OTA updater did not stop within %.0f s; leaving it", timeout)
            self._thread = None

    def slot_state(self) -> SlotState:
        """For the device's status: slots per model, the active one, and the updater's state."""
        with self._lock:
            journal = self._journal
            slots = {name: _slot_summary(model) for name, model in sorted(journal.models.items())}
            actives = [model.active for model in journal.models.values() if model.active is not None]
            running = journal.running_job()
            latest = running or journal.latest_job()
            return SlotState(
                active=actives[0] if len(actives) == 1 else None,
                slots=slots,
                state=str(latest.state) if latest is not None else IDLE,
            )

    def journal(self) -> JournalData:
        """A copy of the journal as it is now."""
        with self._lock:
            return self._journal.model_copy(deep=True)

    def wait_idle(self, timeout: float) -> bool:
        """True once the updater has nothing left to do (for tests and tools)."""
        return self._idle.wait(timeout)

    # --- the worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                job = self._next_job()
            except Exception:
                log.exception("the OTA updater could not plan the next update; it retries on the next change")
                job = None
            if job is None:
                self._idle.set()
                self._wake.wait()
                continue
            self._idle.clear()
            try:
                self._drive(job)
            except Exception:
                log.exception("the OTA updater failed unexpectedly on %s %s", job.model, job.version)
                self._stop.wait(1.0)  # no busy loop if the journal itself cannot be written
            finally:
                with self._lock:
                    self._run = None

    def _next_job(self) -> Job | None:
        """The job not yet done, or a new one for the first model not yet where it should be."""
        with self._lock:
            running = self._journal.running_job()
            if running is not None:
                return running
            desired = self._journal.desired
            if desired is None:
                return None
            for name in sorted(desired.models):
                wanted = desired.models[name]
                serving = self._actions.serving(name)
                if serving is not None and serving.sha256 == wanted.bundle_sha256:
                    continue
                last = self._journal.jobs.get(name)
                if last is not None and last.gave_up_on(wanted, desired.revision):
                    continue
                retrying = last is not None and last.retry and last.targets(wanted)
                job = Job(
                    model=name,
                    version=wanted.version,
                    sha256=wanted.bundle_sha256,
                    size=wanted.bundle_size,
                    url=wanted.bundle_url,
                    rollout_id=wanted.rollout_id,
                    allow_rollback=wanted.allow_rollback,
                    revision=desired.revision,
                    previous_version=serving.version if serving is not None else None,
                    target_slot=self._journal.slots_of(name).spare,
                    attempt=last.attempt + 1 if retrying and last is not None else 1,
                )
                self._journal.jobs[name] = job
                self._save()  # "assigned" is journaled before anything acts on it
                return job
            return None

    def _drive(self, job: Job) -> None:
        """Run ``job`` from its journaled state to a terminal one, or until the agent stops."""
        run = StepRun(job)
        with self._lock:
            self._run = run
            self._align(run)  # a job resumed after a restart may be out of date already
        self._enter(job)
        while not self._stop.is_set():
            if job.state in TERMINAL:
                self._finish(job)
                return
            outcome = self._run_step(run)
            if outcome is None or self._stop.is_set():
                return  # the agent stops: the journal keeps the state, which the restart takes up
            target, reason, details = outcome
            with self._lock:
                job.reason = reason
                self._transition(job, target, details)
            self._enter(job)

    def _align(self, run: StepRun) -> None:
        """Under the lock: a job the desired state no longer wants is cancelled (it fails or rolls
        back, "replaced"); one it still wants answers to the newest revision."""
        desired = self._journal.desired
        job = run.job
        if desired is None or job.terminal or desired.revision <= job.revision:
            return
        wanted = desired.models.get(job.model)
        if wanted is not None and job.targets(wanted):
            job.revision = desired.revision
            job.rollout_id = wanted.rollout_id
            job.allow_rollback = wanted.allow_rollback
        else:
            run.superseded_by = desired.revision
            run.cancel.set()

    def _enter(self, job: Job) -> None:
        """Report the journaled state (once) and honour the test pause."""
        if not job.reported and self._report(job):
            with self._lock:
                job.reported = True
                self._save()
        state = job.state
        log.info("%s %s: %s%s", job.model, job.version, state, f" ({job.reason})" if job.reason else "")
        if self._pause_at is state:
            log.warning("%s %s (%s, a test hook)", PAUSE_MARKER, state, PAUSE_ENV)
            self._stop.wait()

    def _transition(self, job: Job, target: OtaState, details: Mapping[str, Any]) -> None:
        """Journal ``target`` as the job's state (under the lock), before anything acts on it."""
        check_transition(job.state, target)
        job.state = target
        job.reported = False
        job.finished = False
        job.details = dict(details)
        job.updated_at = datetime.now(UTC)
        if target is OtaState.COMMITTED:
            # The same write that says "committed" makes the slot the one served after a restart.
            slots = self._journal.slots_of(job.model)
            slots.active = job.target_slot
            record = slots.active_record
            if record is not None:
                record.committed = True
        self._save()

    def _run_step(self, run: StepRun) -> tuple[OtaState, str, dict[str, Any]] | None:
        job = run.job
        state = job.state
        action: Callable[[StepRun], None] = getattr(self._actions, state.value)
        timeout = self.settings.timeouts.for_state(state, watch_window_s=self.settings.watch.window_s)
        outcome: dict[str, BaseException | None] = {}
        run.details = {}

        def target() -> None:
            try:
                action(run)
                outcome["error"] = None
            except BaseException as exc:  # handed to the worker, which decides
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"ota-{state.value}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            run.abandoned = True
            run.cancel.set()
            return OtaState.TIMED_OUT, f"{state} did not finish within {timeout:g} s", {"timeout_s": timeout}
        error = outcome.get("error")
        if run.superseded_by is not None and (
            error is None or isinstance(error, Cancelled | DownloadCancelled)
        ):
            reason = f"replaced by desired revision {run.superseded_by}"
            return next_on_failure(state), reason, {"superseded_by": run.superseded_by}
        if error is None:
            return next_on_success(state), "", run.details
        if isinstance(error, Cancelled | DownloadCancelled):
            return None  # the agent stops
        if isinstance(error, StepFailed):
            return next_on_failure(state), error.reason, error.details
        log.error("unexpected error in %s", state, exc_info=error)
        return next_on_failure(state), f"unexpected error in {state}: {type(error).__name__}: {error}", {}

    # --- terminal actions -----------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        """The terminal state's action; idempotent, so a restart may run it again."""
        done = threading.Event()

        def act() -> None:
            try:
                if job.state is OtaState.COMMITTED:
                    self._actions.commit(job)
                else:
                    self._actions.roll_back(job)
            except Exception:
                log.exception("finishing %s for %s %s failed", job.state, job.model, job.version)
            finally:
                done.set()

        threading.Thread(target=act, name=f"ota-{job.state.value}", daemon=True).start()
        if not done.wait(self.settings.timeouts.finishing):
            log.error(
                "finishing %s for %s %s took longer than %.0f s",
                job.state,
                job.model,
                job.version,
                self.settings.timeouts.finishing,
            )
        with self._lock:
            job.finished = True
            self._save()

    # --- start-up -------------------------------------------------------------------------------

    def _serve_active_slot(self, name: str) -> None:
        """Serve the active slot of ``name``; if it no longer verifies, the other committed one."""
        slots = self._journal.models[name]
        for slot in _fallback_order(slots):
            record = slots.slots[slot]
            try:
                self._actions.serve_slot(name, record)
            except (BundleError, ServingError) as exc:
                log.error("slot %s of %s (%s) cannot be served: %s", slot, name, record.version, exc)
                continue
            if slot != slots.active:
                log.warning("%s: fell back to slot %s (%s)", name, slot, record.version)
                slots.active = slot
                self._save()
            log.info("serving %s %s from slot %s", name, record.version, slot)
            return
        if slots.active is not None:
            log.error("no slot of %s can be served; the configured bundle (if any) serves instead", name)
            slots.active = None
            self._save()

    # --- helpers --------------------------------------------------------------------------------

    def _report(self, job: Job) -> bool:
        payload = OtaPayload(
            device_id=self.device_id,
            seq=0,
            model=job.model,
            version=job.version,
            state=job.state.value,
            previous_version=job.previous_version,
            rollout_id=job.rollout_id,
            reason=job.reason,
            details={"attempt": job.attempt, "revision": job.revision, **job.details},
        )
        try:
            self._report_to(payload)
        except Exception:  # reported again after the next start
            log.exception("reporting %s for %s %s failed", job.state, job.model, job.version)
            return False
        return True

    def _save(self) -> None:
        self._store.save(self._journal)


class _JournalSlots:
    """The journal's slot records as the actions see them (``actions.SlotBook``)."""

    def __init__(self, journal: JournalData, lock: threading.RLock, save: Callable[[], None]) -> None:
        self._journal = journal
        self._lock = lock
        self._save = save

    def slots(self, model: str) -> ModelSlots:
        with self._lock:
            return self._journal.slots_of(model).model_copy(deep=True)

    def record_slot(self, model: str, slot: SlotName, record: SlotRecord | None) -> None:
        with self._lock:
            slots = self._journal.slots_of(model)
            if record is None:
                slots.slots.pop(slot, None)
            else:
                slots.slots[slot] = record
            self._save()


def _pause_state(value: str | None) -> OtaState | None:
    if not value:
        return None
    try:
        return OtaState(value.strip().lower())
    except ValueError:
        raise ValueError(
            f"{PAUSE_ENV}={value!r} names no updater state; "
            f"use one of: {', '.join(state.value for state in OtaState)}"
        ) from None


def _fallback_order(slots: ModelSlots) -> list[SlotName]:
    """The active slot, then the other one if it was ever committed (never a rejected trial)."""
    if slots.active is None:
        return []
    spare = slots.slots.get(slots.spare)
    return [slots.active, slots.spare] if spare is not None and spare.committed else [slots.active]


def _slot_summary(model: ModelSlots) -> dict[str, Any]:
    summary: dict[str, Any] = {"active": model.active}
    for slot, record in sorted(model.slots.items()):
        summary[slot] = {"version": record.version, "sha256": record.sha256}
    return summary


def _describe_desired(desired: DesiredState) -> str:
    return (
        ", ".join(f"{name} {model.version}" for name, model in sorted(desired.models.items())) or "no models"
    )
