"""Bad input ends in a ConversionError naming the step, the format and the fix; no traceback in the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

import converter
from converter import (
    CalibrationMethod,
    ConversionError,
    ConversionFailed,
    ConversionReport,
    HostInfo,
    convert,
)
from edgefleet.cli import convert as convert_cli
from models.bundle import generate_keypair

pytestmark = pytest.mark.integration

SOURCE = "models.zoo.digits_cnn:trained_model"


@torch.library.custom_op("edgefleet_tests::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An operator no exporter knows: what a model with an exotic custom layer looks like."""
    return x * 2


@mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class MysteryModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(mystery(x))


def mystery_model() -> nn.Module:
    torch.manual_seed(0)
    return MysteryModel().eval()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("errors")
    key, _ = generate_keypair(root / "keys", "test")
    images = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    paths = {"root": root, "key": key}
    arrays: dict[str, dict[str, Any]] = {
        "good": {"input": images},
        "wrong_name": {"pixels": images},
        "wrong_shape": {"input": images.reshape(16, 1, 4, 16)},
        "wrong_dtype": {"input": images.astype(np.float64)},
        "empty": {"input": images[:0]},
        "mlp": {"x": images.reshape(16, 64)[:, :4].copy()},
    }
    for name, content in arrays.items():
        np.savez(root / f"{name}.npz", **content)
        paths[name] = root / f"{name}.npz"
    return paths


def attempt(ws: dict[str, Any], *, source: str = SOURCE, profile: Any = "jetson-orin-nano", **kw: Any) -> Any:
    calib = kw.pop("calib", ws["good"])
    evaluation = kw.pop("eval", ws["good"])
    key = kw.pop("key", ws["key"])
    return convert(
        source, [profile], calib, evaluation, ws["root"] / "out", key, benchmark_iterations=1, **kw
    )


@pytest.mark.parametrize(
    ("calib", "needle", "hint"),
    [
        ("wrong_name", "no array named 'input' (it has ['pixels'])", "numpy.savez(path, input=...)"),
        ("wrong_shape", "axis 2 should be 8", "layout (NCHW vs NHWC)"),
        ("wrong_dtype", "is float64, but the model takes float32", "array.astype(numpy.float32)"),
        ("empty", "0 samples", "at least one"),
    ],
)
def test_bad_calibration_sets_are_refused_before_anything_is_built(
    ws: dict[str, Any], calib: str, needle: str, hint: str
) -> None:
    # --input pins the model's input, so a mismatching calibration set cannot redefine it.
    with pytest.raises(ConversionError) as caught:
        attempt(ws, calib=ws[calib], inputs=["input:Nx1x8x8:float32"])
    error = caught.value
    # The data step comes before any format is chosen: no format to name.
    assert (error.step, error.format) == ("data", None)
    assert needle in error.message and "calibration set" in error.message
    assert hint in error.hint
    assert not (ws["root"] / "out" / "artifacts").exists()


def test_a_missing_model_file(ws: dict[str, Any]) -> None:
    with pytest.raises(ConversionError) as caught:
        attempt(ws, source=str(ws["root"] / "nowhere.onnx"))
    assert caught.value.step == "load" and "nowhere.onnx does not exist" in caught.value.message
    assert "package.module:attr" in caught.value.hint and ".onnx" in caught.value.hint


def test_a_module_path_that_does_not_import(ws: dict[str, Any]) -> None:
    with pytest.raises(ConversionError) as caught:
        attempt(ws, source="no_such_package.models:build")
    assert caught.value.step == "load" and "cannot import" in caught.value.message


def test_a_missing_calibration_file(ws: dict[str, Any]) -> None:
    with pytest.raises(ConversionError) as caught:
        attempt(ws, calib=ws["root"] / "missing.npz")
    assert caught.value.step == "data" and "missing.npz does not exist" in caught.value.message
    assert ".npz" in caught.value.hint


def test_an_unknown_profile_suggests_the_close_one(ws: dict[str, Any]) -> None:
    with pytest.raises(ConversionError) as caught:
        attempt(ws, profile="raspberry-pi-6")
    assert caught.value.step == "plan"
    assert "raspberry-pi-6" in caught.value.message and "raspberry-pi-5" in caught.value.message
    assert "EDGEFLEET_PROFILES_DIR" in caught.value.hint


def test_a_missing_signing_key_fails_first(ws: dict[str, Any]) -> None:
    with pytest.raises(ConversionError) as caught:
        attempt(ws, key=ws["root"] / "keys" / "absent.key")
    assert caught.value.step == "package"
    assert "edgefleet keys generate" in caught.value.hint


def test_an_operator_no_exporter_knows_names_the_operator(ws: dict[str, Any]) -> None:
    source = f"{__name__}:mystery_model"
    with pytest.raises(ConversionFailed) as caught:
        attempt(ws, source=source, profile="raspberry-pi-5", calib=ws["mlp"], eval=ws["mlp"])
    error = caught.value
    assert error.step == "export" and error.format == "onnx"
    assert "edgefleet_tests::mystery" in error.message
    assert "has no ONNX translation" in error.hint and "rewrite that layer" in error.hint
    result = error.report.profile("raspberry-pi-5")
    # TFLite was tried first and failed on the same operator; the Pi then fell back to ONNX.
    assert [(a.format.value, a.decision) for a in result.attempts] == [
        ("tflite", "failed"),
        ("onnx", "failed"),
    ]
    assert "edgefleet_tests.mystery" in result.attempts[0].reasons[0]
    assert any("fell back to onnx" in note for note in result.plan_notes)


# --- the CLI ------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="convert")(convert_cli.convert)

    @app.callback()
    def _root() -> None:
        """Test root, so that `convert` stays a subcommand."""

    return app


def test_cli_errors_are_two_clean_lines(ws: dict[str, Any]) -> None:
    args = ["convert", SOURCE, "--profile", "jetson-orin-nano", "--calib", str(ws["wrong_name"])]
    args += ["--eval", str(ws["good"]), "--out", str(ws["root"] / "cli"), "--key", str(ws["key"])]
    args += ["--input", "input:Nx1x8x8:float32"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error:" in result.output and "[data]" in result.output and "hint:" in result.output


def test_cli_refuses_an_unknown_format_before_starting(ws: dict[str, Any]) -> None:
    args = [
        "convert",
        SOURCE,
        "-p",
        "jetson-orin-nano",
        "--calib",
        str(ws["good"]),
        "--eval",
        str(ws["good"]),
    ]
    args += ["--key", str(ws["key"]), "--format", "coreml"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2
    assert "coreml" in result.output


def fake_conversion(monkeypatch: pytest.MonkeyPatch, out: Path) -> list[dict[str, Any]]:
    """Replace the converter under the CLI with one that records its keyword arguments."""
    calls: list[dict[str, Any]] = []

    def fake_convert(*args: Any, **kwargs: Any) -> ConversionReport:
        calls.append(kwargs)
        host = HostInfo(machine="x86_64", cpu="test", cores=1, features=[])
        return ConversionReport(
            name="m",
            version="1.0.0",
            source=SOURCE,
            out_dir=str(out),
            host=host,
            calibration_samples=1,
            evaluation_samples=1,
        )

    # The command imports the converter when it runs, so patching the package reaches it.
    monkeypatch.setattr(converter, "convert", fake_convert)
    return calls


def cli_args(out: Path, *extra: str) -> list[str]:
    args = ["convert", SOURCE, "-p", "jetson-orin-nano", "--calib", "c.npz", "--eval", "e.npz"]
    return [*args, "--key", "k.key", "--out", str(out), "--json", *extra]


def test_cli_calibrations_reach_the_converter_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = fake_conversion(monkeypatch, tmp_path)
    extra = ["--calibration", "entropy", "--calibration", "accuracy-control"]
    result = CliRunner().invoke(cli(), cli_args(tmp_path, *extra))
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli(), cli_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert [call["calibrations"] for call in calls] == [["entropy", "accuracy-control"], None]


def test_cli_refuses_an_unknown_calibration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_conversion(monkeypatch, tmp_path)
    result = CliRunner().invoke(cli(), cli_args(tmp_path, "--calibration", "kl"))
    assert result.exit_code == 2
    # Rich boxes and wraps the usage error; compare its words.
    words = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--calibration'" in words and "'kl' is not one of" in words
    assert calls == []


def test_cli_calibration_choices_are_the_converters() -> None:
    # The CLI keeps its own copy so that `edgefleet --help` does not import the converter.
    assert [c.value for c in convert_cli.Calibration] == [m.value for m in CalibrationMethod]


def test_cli_json_report(ws: dict[str, Any], tmp_path: Path) -> None:
    from models.zoo import get_reference

    calib, evaluation = get_reference("digits-cnn").write_data(tmp_path / "data")
    args = ["convert", SOURCE, "-p", "jetson-orin-nano", "--calib", str(calib), "--eval", str(evaluation)]
    args += [
        "--out",
        str(tmp_path / "out"),
        "--key",
        str(ws["key"]),
        "--output",
        "logits",
        "--name",
        "digits-cnn",
    ]
    args += ["--json"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [profile] = report["profiles"]
    assert profile["profile"] == "jetson-orin-nano" and profile["status"] == "packaged"
    assert Path(profile["bundle"]["path"]).is_file()
    assert profile["attempts"][0]["metrics"]["top1_agreement"] >= 0.995
