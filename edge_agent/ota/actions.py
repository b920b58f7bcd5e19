"""What each updater state does: its *enter* action, and the terminal *commit* and *roll back*.

``Actions`` has one method per state on the way (``assigned`` ... ``watching``), named after it;
each either returns (the state succeeded: what it found goes into ``StepRun.details``, which the
next state's report carries) or raises ``StepFailed`` with the reason the report gives, or
``Cancelled`` when the agent stops or a newer desired state replaced the target. The updater
(``updater.Updater``) decides the transitions, journals them and enforces the timeouts; nothing
here writes the journal except through ``SlotBook``.

The terminal actions are idempotent, so a restart can run them again:

- ``commit``: the new version stays the default; every other version of the model unloads
  (each drains its requests in flight first); the download goes.
- ``roll_back`` (for ``failed``, ``rolled_back`` and ``timed_out``): the previous version is the
  default again; the new one unloads unless it is the committed one.

``serve_slot`` is what a start-up does with a committed slot: verify it again, load it, make it
the default, and unload whatever else the configuration loaded for that model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.ota.download import Downloader, DownloadError, final_path, part_path, resolve_url
from edge_agent.ota.engine import DefaultPinning
from edge_agent.ota.health import GoldenError, load_golden, run_golden, synthetic_inputs, warm_up
from edge_agent.ota.journal import Job, ModelSlots, SlotName, SlotRecord
from edge_agent.ota.slots import SlotStore
from edge_agent.ota.watch import WatchObserver, WatchPolicy, WindowStats, judge
from edge_agent.serving import InferenceEngine, InstalledBundle, ServingError
from models.bundle import BundleError, verify_bundle
from models.versioning import RollbackRefused, VersionError, check_upgrade, parse_version

log = logging.getLogger("edgefleet.agent.ota")


class StepFailed(Exception):
    """A state's action failed; ``reason`` is what the report says."""

    def __init__(self, reason: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


class Cancelled(Exception):
    """The action stopped because the agent stops or a newer desired state replaced its target."""


@dataclass
class StepRun:
    """What one job's actions share while the agent runs (lost on a restart, by design)."""

    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    """Set when an action overran its timeout: its thread may still run, but must change nothing."""
    superseded_by: int | None = None
    baseline: WindowStats | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def check_live(self) -> None:
        """Raise ``Cancelled`` when this run must not change anything any more."""
        if self.abandoned or self.cancel.is_set():
            raise Cancelled()


class SlotBook(Protocol):
    """The journal's slot records, as the actions may read and change them."""

    def slots(self, model: str) -> ModelSlots:
        """A copy of the model's slots."""
        ...

    def record_slot(self, model: str, slot: SlotName, record: SlotRecord | None) -> None:
        """Journal what ``slot`` holds (``None``: nothing to rely on) before going on."""
        ...


@dataclass(frozen=True)
class ActionSettings:
    fleet_url: str | None
    watch: WatchPolicy
    warmup_runs: int
    agent_version: str


class Actions:
    """The actions of every state, over one engine, one slot store and one downloads directory."""

    def __init__(
        self,
        engine: InferenceEngine,
        pins: DefaultPinning,
        *,
        observer: WatchObserver,
        slots: SlotStore,
        book: SlotBook,
        downloader: Downloader,
        downloads_dir: Path,
        trusted_keys: Sequence[Ed25519PublicKey],
        settings: ActionSettings,
        on_loaded: Callable[[InstalledBundle], None] | None = None,
        on_serving_changed: Callable[[], object] | None = None,
    ) -> None:
        self.engine = engine
        self.repository = engine.repository
        self.pins = pins
        self.observer = observer
        self.slots = slots
        self.book = book
        self.downloader = downloader
        self.downloads_dir = downloads_dir
        self.trusted_keys = list(trusted_keys)
        self.settings = settings
        self._on_loaded = on_loaded
        self._on_serving_changed = on_serving_changed

    # --- enter: the states on the way ------------------------------------------------------------

    def assigned(self, run: StepRun) -> None:
        job = run.job
        try:
            resolve_url(job.url, self.settings.fleet_url)
        except DownloadError as exc:
            raise StepFailed(str(exc)) from None
        # One bundle is downloaded at a time: leftovers of other targets go.
        if self.downloads_dir.is_dir():
            for leftover in self.downloads_dir.iterdir():
                if not leftover.name.startswith(job.sha256):
                    leftover.unlink(missing_ok=True)

    def downloading(self, run: StepRun) -> None:
        job = run.job
        try:
            url = resolve_url(job.url, self.settings.fleet_url)
            result = self.downloader.fetch(
                url, self.downloads_dir, sha256=job.sha256, size=job.size, cancel=run.cancel
            )
        except DownloadError as exc:
            raise StepFailed(str(exc)) from None
        run.details = {"bytes": result.size, "resumed_from": result.resumed_from, "requests": result.requests}

    def verifying(self, run: StepRun) -> None:
        job = run.job
        path = final_path(self.downloads_dir, job.sha256)
        if not path.is_file():
            raise StepFailed(f"the downloaded bundle {path.name} is gone; it is downloaded again next time")
        try:
            verified = verify_bundle(path, self.trusted_keys)
        except BundleError as exc:
            path.unlink(missing_ok=True)
            raise StepFailed(f"bundle refused: {exc.message}", {"code": exc.code}) from None
        manifest = verified.manifest
        if (manifest.name, manifest.version) != (job.model, job.version):
            raise StepFailed(
                f"the bundle holds {manifest.name} {manifest.version}, "
                f"but the desired state names {job.model} {job.version}"
            )
        try:
            check_upgrade(job.previous_version, manifest.version, allow_rollback=job.allow_rollback)
        except (RollbackRefused, VersionError) as exc:
            raise StepFailed(str(exc)) from None
        if parse_version(manifest.min_agent_version) > parse_version(self.settings.agent_version):
            raise StepFailed(
                f"the bundle needs agent {manifest.min_agent_version} or newer; "
                f"this agent is {self.settings.agent_version}"
            )
        run.details = {"key_id": verified.key_id}

    def staged(self, run: StepRun) -> None:
        """Into the spare slot, loaded beside the current version (which keeps the default
        traffic), warmed up, and checked against its golden I/O."""
        job = run.job
        serving = self.serving(job.model)
        target_dir = self.slots.slot_dir(job.model, job.target_slot)
        # Cannot happen (the spare slot is never active); a guard all the same.
        if job.target_slot == self.book.slots(job.model).active or (
            serving is not None and serving.directory.is_relative_to(target_dir)
        ):
            raise StepFailed(f"slot {job.target_slot} holds what serves now; refusing to stage over it")
        self.book.record_slot(job.model, job.target_slot, None)  # forgotten before its files go
        try:
            installed, record = self.slots.stage(
                job.model, job.target_slot, final_path(self.downloads_dir, job.sha256)
            )
        except BundleError as exc:
            raise StepFailed(f"bundle refused while staging: {exc.message}", {"code": exc.code}) from None
        except FileNotFoundError:
            raise StepFailed("the downloaded bundle is gone; it is downloaded again next time") from None
        self.book.record_slot(job.model, job.target_slot, record)
        run.check_live()
        if job.previous_version is not None and self.repository.is_ready(job.model, job.previous_version):
            self.pins.pin_default(job.model, job.previous_version)
        try:
            self.repository.add(installed)
            self.repository.load(job.model, job.version)
        except ServingError as exc:
            raise StepFailed(f"the new version cannot be loaded: {exc.message}") from None
        if self._on_loaded is not None:
            self._on_loaded(installed)
        try:
            golden = load_golden(installed.directory, installed.manifest)
        except GoldenError as exc:
            raise StepFailed(f"golden check impossible: {exc}") from None
        feeds = golden.inputs if golden is not None else synthetic_inputs(installed.manifest)
        first_sample = {name: value[:1] for name, value in feeds.items()}

        def run_model(batch: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
            return self._infer_on(job.model, job.version, batch)

        try:
            warmup = warm_up(run_model, first_sample, self.settings.warmup_runs)
            report = run_golden(run_model, golden) if golden is not None else None
        except ServingError as exc:
            raise StepFailed(f"the new version failed on the golden inputs: {exc.message}") from None
        details: dict[str, Any] = {
            "slot": job.target_slot,
            "warmup_ms": [round(seconds * 1000, 3) for seconds in warmup],
            "golden": report.figures() if report is not None else "skipped: the bundle has no golden I/O",
        }
        if report is not None and not report.passed:
            raise StepFailed(report.reason, details)
        run.details = details

    def switching(self, run: StepRun) -> None:
        """The new version becomes the default: one pin, no request dropped."""
        job = run.job
        if not self.repository.is_ready(job.model, job.version):
            raise StepFailed(f"{job.model} {job.version} is no longer loaded; nothing to switch to")
        previous = job.previous_version
        run.baseline = self.observer.recent(job.model, previous) if previous is not None else None
        self.observer.begin(job.model, job.version)
        run.check_live()
        self.pins.pin_default(job.model, job.version)
        self._serving_changed()
        run.details = {"baseline": run.baseline.figures() if run.baseline is not None else None}

    def watching(self, run: StepRun) -> None:
        job = run.job
        policy = self.settings.watch
        started = time.monotonic()
        while True:
            if not self.repository.is_ready(job.model, job.version):
                raise StepFailed(f"{job.model} {job.version} was unloaded during its watch window")
            verdict = judge(
                self.observer.window(job.model, job.version),
                run.baseline,
                policy,
                elapsed_s=time.monotonic() - started,
            )
            if verdict.decision == "roll_back":
                raise StepFailed(verdict.reason, {"watch": verdict.figures})
            if verdict.decision == "commit":
                run.details = {"watch": verdict.figures}
                return
            if run.cancel.wait(policy.check_interval_s):
                raise Cancelled()

    # --- the terminal actions ----------------------------------------------------------------------

    def commit(self, job: Job) -> None:
        self.observer.end(job.model, job.version)
        if self.repository.is_ready(job.model, job.version):
            self.pins.pin_default(job.model, job.version)
            for version in self.repository.ready_versions(job.model):
                if version != job.version:
                    self.repository.unload(job.model, version)  # drains its requests first
        self.drop_download(job)
        self._serving_changed()

    def roll_back(self, job: Job) -> None:
        self.observer.end(job.model, job.version)
        previous = job.previous_version
        if previous is not None and self.repository.is_ready(job.model, previous):
            self.pins.pin_default(job.model, previous)
        else:
            self.pins.pin_default(job.model, None)
        active = self.book.slots(job.model).active_record
        keep = {previous, active.version if active is not None else None}
        if job.version not in keep and self.repository.is_ready(job.model, job.version):
            self.repository.unload(job.model, job.version)
        if not job.retry:
            self.drop_download(job)
        self._serving_changed()

    # --- start-up ----------------------------------------------------------------------------------

    def serve_slot(self, name: str, record: SlotRecord) -> None:
        """Verify a committed slot again and serve it as the default; raises ``BundleError`` or
        ``ServingError`` when it cannot be served."""
        installed = self.slots.reopen(record)
        self.repository.add(installed)
        self.repository.load(name, record.version)
        self.pins.pin_default(name, record.version)
        for version in self.repository.ready_versions(name):
            if version != record.version:
                self.repository.unload(name, version)  # e.g. the bundle the configuration names
        if self._on_loaded is not None:
            self._on_loaded(installed)

    # --- helpers -----------------------------------------------------------------------------------

    def serving(self, name: str) -> InstalledBundle | None:
        """The bundle that requests naming no version get now."""
        models = {m.version: m for m in self.engine.loaded_models() if m.name == name}
        if not models:
            return None
        pinned = self.pins.pinned_default(name)
        if pinned in models:
            return models[pinned].installed
        return models[max(models, key=parse_version)].installed

    def drop_download(self, job: Job) -> None:
        final_path(self.downloads_dir, job.sha256).unlink(missing_ok=True)
        part_path(self.downloads_dir, job.sha256).unlink(missing_ok=True)

    def _infer_on(self, name: str, version: str, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        # Straight to the loaded version: health checks are not traffic, so no statistics,
        # telemetry or drift see them.
        with self.repository.lease(name, version) as model:
            return model.execute(feeds, raw=False).outputs

    def _serving_changed(self) -> None:
        if self._on_serving_changed is not None:
            try:
                self._on_serving_changed()
            except Exception:
                log.exception("the serving-changed hook failed")
