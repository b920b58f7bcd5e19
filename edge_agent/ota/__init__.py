"""Over-the-air model updates on the device: a crash-safe, journaled state machine (docs/ota.md).

Inside out:

* pure parts: ``states`` (the states of BRIEF.md §4 and the rules between them), the golden
  comparison in ``health``, the watch verdict in ``watch``;
* ``journal`` (the persisted state, atomically replaced), ``slots`` (A/B extractions on disk),
  ``download`` (HTTP with Range resume), ``engine`` (a repository with a pinned default version);
* ``actions`` (what each state does: enter, commit, roll back) and ``updater.Updater`` (the state
  machine: journaling, transitions, timeouts, reports, restarts), which drives them for the agent.

Wiring it into an agent (``edge_agent.agent`` does this):

    engine = InferenceEngine.create(data_dir=data_dir, trusted_keys=keys, profile=profile)
    updater = Updater(engine, data_dir=data_dir, trusted_keys=keys, device_id=device,
                      report=spool_reporter(telemetry.outbox), settings=UpdaterSettings(...))
    updater.resume()                 # after the configured bundles are installed, before serving
    # the telemetry's desired-state callback: updater.on_desired; its status: updater.slot_state
    updater.stop()                   # before the engine stops

Nothing here imports a runtime or a training framework.
"""

from edge_agent.ota.actions import Actions, Cancelled, SlotBook, StepFailed, StepRun
from edge_agent.ota.download import (
    Credentials,
    DownloadCancelled,
    Downloader,
    DownloadError,
    DownloadResult,
    DownloadSettings,
    parse_content_range,
    resolve_url,
)
from edge_agent.ota.engine import DefaultPinning
from edge_agent.ota.health import (
    GoldenError,
    GoldenReport,
    GoldenSet,
    OutputComparison,
    compare_golden,
    load_golden,
    run_golden,
    warm_up,
)
from edge_agent.ota.journal import Job, JournalData, JournalStore, ModelSlots, SlotRecord
from edge_agent.ota.reporting import OutboxLike, spool_reporter
from edge_agent.ota.slots import SlotStore, verify_extracted
from edge_agent.ota.states import (
    HAPPY_PATH,
    IDLE,
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
from edge_agent.ota.updater import PAUSE_ENV, PAUSE_MARKER, Reporter, Updater, UpdaterSettings
from edge_agent.ota.watch import WatchObserver, WatchPolicy, WatchVerdict, WindowStats, judge

__all__ = [
    "HAPPY_PATH",
    "IDLE",
    "PAUSE_ENV",
    "PAUSE_MARKER",
    "TERMINAL",
    "Actions",
    "Cancelled",
    "Credentials",
    "DefaultPinning",
    "DownloadCancelled",
    "DownloadError",
    "DownloadResult",
    "DownloadSettings",
    "Downloader",
    "GoldenError",
    "GoldenReport",
    "GoldenSet",
    "IllegalTransition",
    "Job",
    "JournalData",
    "JournalStore",
    "ModelSlots",
    "OtaState",
    "OutboxLike",
    "OutputComparison",
    "Reporter",
    "ResumeAction",
    "SlotBook",
    "SlotRecord",
    "SlotStore",
    "StepFailed",
    "StepRun",
    "StepTimeouts",
    "Updater",
    "UpdaterSettings",
    "WatchObserver",
    "WatchPolicy",
    "WatchVerdict",
    "WindowStats",
    "check_transition",
    "compare_golden",
    "judge",
    "load_golden",
    "next_on_failure",
    "next_on_success",
    "next_on_timeout",
    "parse_content_range",
    "resolve_url",
    "resume_action",
    "run_golden",
    "spool_reporter",
    "verify_extracted",
    "warm_up",
]
