"""The demo's parts that need no fleet: its plan, folder, damage, claims, commands and rendering.

The demo itself (processes, rollouts, drift) runs end to end in tests/integration/test_demo.py.
"""

from __future__ import annotations

import json
import os
import signal
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from edgefleet.cli._console import CLIError
from edgefleet.cli.demo import next_steps
from edgefleet.demo import DemoLayout, DemoSettings, DemoSummary, check_claims, plan_devices
from edgefleet.demo.agents import Credentials, agent_command, simulated_profiles
from edgefleet.demo.broken import broken_release
from edgefleet.demo.damage import DamageError, damage_model, damage_openvino, shuffled
from edgefleet.demo.fleet_server import ingest_connected
from edgefleet.demo.interrupts import interrupts_raise, shielded
from edgefleet.demo.release_cache import cached_bundles, remember
from edgefleet.demo.releases import Release
from edgefleet.demo.rollouts import gate_table
from edgefleet.demo.summary import AlertRow, DeviceRow, RolloutRow, TrafficRow, render_summary
from edgefleet.demo.traffic import brighten
from hw_profiles import load_profile
from models.bundle import GOLDEN_NAME, extract_bundle, generate_keypair, load_private_key, load_public_key
from tests.support.bundles import build_test_bundle, flip_byte

# --- the plan -----------------------------------------------------------------------------------


def test_six_devices_two_per_profile_one_per_site() -> None:
    devices = plan_devices()
    assert len(devices) == len({d.id for d in devices}) == 6
    assert {(d.profile, d.site) for d in devices} == {
        (p, s) for p in ("raspberry-pi-5", "jetson-orin-nano", "intel-x86-openvino") for s in ("a", "b")
    }
    assert all(d.tags == {"site": d.site} for d in devices)


def test_fast_mode_is_shorter_in_every_respect() -> None:
    fast, full = DemoSettings.for_mode(fast=True), DemoSettings.for_mode(fast=False)
    assert len(fast.v2.waves) < len(full.v2.waves)
    assert fast.v2.bake_s < full.v2.bake_s
    assert fast.watch_s < full.watch_s
    assert fast.request_pause_s > full.request_pause_s  # fewer requests per second
    assert fast.benchmark_iterations < full.benchmark_iterations
    for plan in (fast.v1, fast.v2, fast.v3, full.v2):
        assert plan.canary == "1"
        assert plan.waves[-1] == "100%"
    # Widened for one host, but failures still abort: the broken release must be caught.
    assert "max_failure_rate" not in full.v3.gates


# --- the folder ---------------------------------------------------------------------------------


def test_the_folder_is_created_and_a_rerun_clears_what_the_last_run_wrote(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path / "edgefleet-demo")
    layout.prepare()
    assert layout.keys_dir.is_dir() and layout.logs_dir.is_dir()
    (layout.server_dir / "bundles").mkdir(parents=True)
    layout.summary_file.write_text("{}")
    layout.keys_dir.joinpath("edgefleet-demo.key").write_text("kept")
    layout.release_dir("1.0.0").mkdir()
    layout.prepare()
    assert not layout.server_dir.exists() and not layout.summary_file.exists()
    assert layout.keys_dir.joinpath("edgefleet-demo.key").read_text() == "kept"
    assert layout.release_dir("1.0.0").is_dir()  # reused when identical (release_cache)


def test_a_folder_the_demo_did_not_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("do not delete")
    with pytest.raises(CLIError, match="not empty"):
        DemoLayout(tmp_path).prepare()
    assert (tmp_path / "precious.txt").read_text() == "do not delete"


def test_the_converter_only_demo_folder_of_earlier_versions_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "edgefleet-demo.key").write_text("key")
    (tmp_path / "digits-cnn-1.0.0-raspberry-pi-5.efb").write_text("old")
    DemoLayout(tmp_path).prepare()
    assert not (tmp_path / "digits-cnn-1.0.0-raspberry-pi-5.efb").exists()
    assert (tmp_path / "keys" / "edgefleet-demo.key").exists()


# --- the agents' command line and profiles ------------------------------------------------------


def test_agent_command_speaks_mqtt_311_and_keeps_the_password_off_the_command_line(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path)
    spec = plan_devices()[0]
    command = agent_command(
        spec,
        Credentials(spec.id, "s3cret"),
        layout=layout,
        settings=DemoSettings.for_mode(fast=True),
        mqtt_url="mqtt://127.0.0.1:1",
        fleet_url="http://127.0.0.1:2",
        trusted_key=tmp_path / "k.pub.pem",
    )
    assert "s3cret" not in command
    flags = dict(zip(command[5::2], command[6::2], strict=False))
    assert flags["--mqtt-protocol"] == "3.1.1"
    assert flags["--profile"] == spec.profile
    assert flags["--device-id"] == spec.id
    assert flags["--grpc"] == "127.0.0.1:0"
    assert flags["--mqtt-password-file"].endswith("mqtt-password")


def test_simulated_profiles_are_the_real_ones_with_one_thread(tmp_path: Path) -> None:
    directory = simulated_profiles(tmp_path, ("jetson-orin-nano", "raspberry-pi-5"))
    for name in ("jetson-orin-nano", "raspberry-pi-5"):
        real, simulated = load_profile(name), load_profile(directory / f"{name}.yaml")
        assert simulated.threads == 1 and real.threads > 1
        assert simulated.name == real.name and simulated.runtimes == real.runtimes


# --- damage and the broken release --------------------------------------------------------------


def test_shuffled_keeps_shape_type_and_values_but_not_order() -> None:
    values = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    out = shuffled(values, np.random.default_rng(0))
    assert out.shape == values.shape and out.dtype == values.dtype
    assert sorted(out.ravel()) == sorted(values.ravel())
    assert not np.array_equal(out, values)
    assert np.array_equal(out, shuffled(values, np.random.default_rng(0)))


def test_openvino_damage_touches_only_the_largest_constant(tmp_path: Path) -> None:
    small = np.arange(4, dtype=np.float32)
    large = np.arange(32, dtype=np.int8)
    (tmp_path / "model.bin").write_bytes(small.tobytes() + large.tobytes())
    layers = ET.Element("net")
    for index, (element, offset, size) in enumerate((("f32", 0, 16), ("i8", 16, 32))):
        layer = ET.SubElement(ET.SubElement(layers, "layers"), "layer", type="Const", name=f"c{index}")
        ET.SubElement(layer, "data", element_type=element, offset=str(offset), size=str(size))
    ET.ElementTree(layers).write(tmp_path / "model.xml")
    damage = damage_openvino(tmp_path / "model.xml", tmp_path / "model.bin", np.random.default_rng(1))
    data = (tmp_path / "model.bin").read_bytes()
    assert np.array_equal(np.frombuffer(data[:16], dtype=np.float32), small)
    damaged = np.frombuffer(data[16:], dtype=np.int8)
    assert sorted(damaged) == sorted(large) and not np.array_equal(damaged, large)
    assert damage.tensor == "c1" and damage.elements == 32 and damage.moved > 0


def test_an_unknown_model_format_cannot_be_damaged(tmp_path: Path) -> None:
    with pytest.raises(DamageError, match="not an ONNX"):
        damage_model(tmp_path, "model.pt2")


def test_the_broken_release_is_signed_and_intact_but_fails_its_golden_check(tmp_path: Path) -> None:
    import onnxruntime

    private, public = generate_keypair(tmp_path / "keys", "release")
    good = build_test_bundle(tmp_path / "v2", private_key=load_private_key(private), version="2.0.0")
    source = Release("2.0.0", {"test-x86_64": good.path}, good.path.parent, "good")
    broken, damages = broken_release(source, "3.0.0", DemoLayout(tmp_path / "demo"), private, public)

    unpacked = tmp_path / "unpacked"
    manifest = extract_bundle(broken.bundles["test-x86_64"], unpacked, [load_public_key(public)]).manifest
    assert manifest.version == "3.0.0"
    assert manifest.files[GOLDEN_NAME] == good.manifest.files[GOLDEN_NAME]  # recorded before the damage
    assert manifest.files["model.onnx"].sha256 != good.manifest.files["model.onnx"].sha256
    assert "damaged" in manifest.labels["demo"]
    assert damages["test-x86_64"].moved > 0
    golden = np.load(unpacked / GOLDEN_NAME)
    session = onnxruntime.InferenceSession(str(unpacked / "model.onnx"))
    got = session.run(None, {"x": golden["x"]})[0]
    assert not np.allclose(got, golden["y"], atol=manifest.golden.atol if manifest.golden else 0)
    assert json.loads((broken.directory / "damage.json").read_text())["from"] == "2.0.0"


# --- the release cache --------------------------------------------------------------------------


def test_a_cached_release_is_reused_only_under_its_fingerprint(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys", "release")
    built = build_test_bundle(tmp_path / "release", private_key=load_private_key(private))
    remember(built.path.parent, "abc", {"test-x86_64": built.path})
    assert cached_bundles(built.path.parent, "abc", public) == {"test-x86_64": built.path}
    assert cached_bundles(built.path.parent, "other", public) is None
    flipped = flip_byte(built.path, tmp_path / "flipped.efb", "model.onnx", 40)
    flipped.replace(built.path)  # a bundle damaged since: converted again
    assert cached_bundles(built.path.parent, "abc", public) is None


# --- small pure helpers -------------------------------------------------------------------------


def test_brighten_scales_and_clips_to_the_models_range() -> None:
    sample = np.array([0.0, 0.4, 0.8], dtype=np.float32)
    assert brighten(sample, 1.0) is sample
    assert np.allclose(brighten(sample, 1.5), [0.0, 0.6, 1.0])
    assert brighten(sample, 1.5).dtype == np.float32


def test_ingest_connected_reads_the_servers_gauge() -> None:
    assert ingest_connected("# HELP x\nedgefleet_ingest_connected 1.0\n")
    assert not ingest_connected("edgefleet_ingest_connected 0.0\n")
    assert not ingest_connected("edgefleet_ingest_connected_total 1.0\n")


def test_next_steps_restart_the_server_on_the_demos_data_and_query_it() -> None:
    text = next_steps(Path("edgefleet-demo"))
    assert "edgefleet server run --data-dir edgefleet-demo/server" in text
    assert "--trusted-key edgefleet-demo/keys/edgefleet-demo.pub.pem" in text
    token = "--token $(cat edgefleet-demo/server/admin.token)"
    assert f"edgefleet devices ls --server http://127.0.0.1:8080 {token}" in text
    assert "'my demo/server'" in next_steps(Path("my demo"))  # quoted for the shell


def test_sigterm_interrupts_like_ctrl_c_and_the_shield_holds_both_off() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupts_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # let the handler run
    noticed: list[bool] = []
    with shielded(lambda: noticed.append(True)):
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0)
    assert noticed == [True]
    assert signal.getsignal(signal.SIGTERM) == before


# --- claims and rendering -----------------------------------------------------------------------


def _summary() -> DemoSummary:
    devices = [DeviceRow(d.id, d.profile, d.site, "2.0.0", True) for d in plan_devices()]
    ids = sorted(d.id for d in devices)
    return DemoSummary(
        model="digits-cnn",
        fast=True,
        server_url="http://127.0.0.1:1",
        out="edgefleet-demo",
        elapsed_s=100.0,
        devices=devices,
        versions={"2.0.0": 6},
        rollouts=[
            RolloutRow("r-1", "1.0.0", "completed", None, 2, 6, {"committed": 6}, [ids[0]], ids),
            RolloutRow("r-2", "2.0.0", "completed", None, 2, 6, {"committed": 6}, [ids[1]], ids),
            RolloutRow(
                "r-3",
                "3.0.0",
                "aborted",
                "failure_rate",
                2,
                6,
                {"reverted": 1, "skipped": 5},
                [ids[2]],
                [ids[2]],
            ),
        ],
        alerts=[AlertRow(1, "tag:site=b", "2.0.0", "input/channel_mean[0]", "psi", 0.4, 0.25, "alert", True)],
        traffic=[TrafficRow(i, "a", 10, 0, {"1.0.0": 5, "2.0.0": 5}, None) for i in ids],
        shifted_site="b",
    )


def test_the_claims_hold_for_a_good_run() -> None:
    assert check_claims(_summary()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: replace(s, devices=[replace(d, version="1.0.0") for d in s.devices]), "not every device"),
        (lambda s: replace(s, rollouts=s.rollouts[:2]), "3.0.0 was not aborted"),
        (
            lambda s: replace(s, rollouts=[*s.rollouts[:2], replace(s.rollouts[2], assigned=["a", "b"])]),
            "beyond its canary",
        ),
        (lambda s: replace(s, alerts=[replace(s.alerts[0], cohort="tag:site=a")]), "no drift alert"),
        (
            lambda s: replace(s, traffic=[replace(s.traffic[0], versions={"3.0.0": 1}), *s.traffic[1:]]),
            "3.0.0 answered",
        ),
    ],
)
def test_each_broken_claim_is_named(change: object, problem: str) -> None:
    summary = change(_summary())  # type: ignore[operator]
    assert any(problem in p for p in check_claims(summary))


def test_the_summary_renders_devices_rollouts_alerts_and_traffic() -> None:
    console = Console(record=True, width=200)
    console.print(render_summary(_summary()))
    text = console.export_text()
    for shown in ("pi5-a", "raspberry-pi-5", "aborted", "failure_rate", "tag:site=b", "60 answered"):
        assert shown in text
    assert json.loads(json.dumps(_summary().to_json()))["requests"] == {"ok": 60, "failed": 0}


def test_gate_tables_say_which_gate_failed_and_why() -> None:
    console = Console(record=True, width=200)
    gates: list[dict[str, Any]] = [
        {
            "name": "failure_rate",
            "passed": False,
            "value": 1.0,
            "threshold": 0.0,
            "detail": "1/1 devices failed",
        },
        {"name": "p95_latency_ratio", "passed": None, "value": None, "threshold": 5.0, "detail": "waiting"},
    ]
    console.print(gate_table(gates, title="canary: abort", figures={}, ok=False))
    text = console.export_text()
    assert "FAIL" in text and "1/1 devices failed" in text and "waiting" in text
