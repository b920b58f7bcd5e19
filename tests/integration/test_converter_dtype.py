"""One model, one client dtype on every device (issue 18, item 8).

A torch text model takes int64 token ids (``--input ids:1x32:int64``) and returns float logits
and an int64 arg-max. litert-torch turns both int64 tensors into int32 inside the TFLite model;
ONNX and OpenVINO keep int64. Every bundle must still declare what the source declared (INT64),
and every device's agent must take the same INT64 request: the TFLite session narrows the ids at
its edge (refusing values that do not fit int32, never wrapping them) and widens the arg-max
back. Checked through the bundles' real runtime sessions, the in-process API, and tritonclient
against real ``edgefleet agent serve`` processes; the conversion report says where a tensor runs
narrower than it is served.

The model reduces ids modulo its vocabulary before the embedding (as hashed-token models do), so
ids far beyond int32 are meaningful to it: ONNX Runtime answers them, and a silently wrapped id
would give a different, wrong answer on the Pi, which is why the TFLite bundle refuses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from converter import ConversionReport, convert
from edge_agent.api import LocalInference
from edge_agent.runtimes import InvalidInput, RuntimeSession, open_bundle_session
from edge_agent.serving import InvalidRequest
from models.bundle import extract_bundle, generate_keypair, load_public_key, verify_bundle
from models.bundle.manifest import Manifest
from tests.support.agent_process import running_agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI, INTEL, JETSON = "raspberry-pi-5", "intel-x86-openvino", "jetson-orin-nano"
PROFILES = (PI, INTEL, JETSON)
FORMAT_OF = {PI: "tflite", INTEL: "openvino", JETSON: "onnx"}
NAME = "text-ids"
VOCAB = 1000
SEQ = 32
INT32_MAX = 2**31 - 1
IDS_NOTE = "ids: served as INT64, runs as int32 inside TFLite; values outside int32 are refused"


class HashedTextClassifier(torch.nn.Module):
    """Token ids → embedding (ids modulo the vocabulary) → mean → linear; logits and their arg-max."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.embedding(torch.remainder(ids, VOCAB)).mean(dim=1))
        return logits, logits.argmax(dim=1)


@dataclass(frozen=True)
class Converted:
    model: HashedTextClassifier
    report: ConversionReport
    bundles: dict[str, Path]
    public_key: Path
    workdir: Path

    def manifest(self, profile: str) -> Manifest:
        return verify_bundle(self.bundles[profile], [load_public_key(self.public_key)]).manifest

    def expected(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits, top = self.model(torch.from_numpy(ids))
        return {"logits": logits.numpy(), "top": top.numpy()}


def _ids(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (count, SEQ), dtype=np.int64)


def _convert(workdir: Path, profiles: tuple[str, ...], precisions: list[str] | None) -> Converted:
    torch.manual_seed(0)
    model = HashedTextClassifier().eval()
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "calib.npz", ids=_ids(64, seed=1))
    np.savez(workdir / "eval.npz", ids=_ids(64, seed=2))
    private_key, public_key = generate_keypair(workdir / "keys", "dtype-test")
    report = convert(
        model,
        list(profiles),
        workdir / "calib.npz",
        workdir / "eval.npz",
        workdir / "out",
        private_key,
        inputs=["ids:1x32:int64"],
        output_names=["logits", "top"],
        precisions=precisions,
        name=NAME,
        benchmark_iterations=3,
    )
    bundles = {}
    for result in report.profiles:
        assert result.bundle is not None, result.error
        bundles[result.profile] = Path(result.bundle.path)
    return Converted(model, report, bundles, public_key, workdir)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """fp32 bundles of one model for a TFLite, an OpenVINO and an ONNX profile."""
    return _convert(tmp_path_factory.mktemp("dtype-fp32"), PROFILES, ["fp32"])


@pytest.fixture
def sessions(fp32: Converted, tmp_path: Path) -> Iterator[dict[str, RuntimeSession]]:
    """Each bundle verified, extracted and opened as the agent opens it (manifest signature and all)."""
    opened: dict[str, RuntimeSession] = {}
    try:
        for profile, bundle in fp32.bundles.items():
            staged = extract_bundle(bundle, tmp_path / profile, [load_public_key(fp32.public_key)])
            assert staged.directory is not None
            opened[profile] = open_bundle_session(staged.directory, staged.manifest)
        yield opened
    finally:
        for session in opened.values():
            session.close()


def test_every_bundle_declares_the_dtypes_the_source_declared(fp32: Converted) -> None:
    for profile in PROFILES:
        manifest = fp32.manifest(profile)
        assert manifest.format.value == FORMAT_OF[profile]
        assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [("ids", "int64", [1, SEQ])]
        assert [(s.name, s.dtype) for s in manifest.outputs] == [("logits", "float32"), ("top", "int64")]


def _golden(converted: Converted, profile: str) -> dict[str, np.ndarray]:
    """golden.npz of a bundle, read after the verifier's extraction."""
    directory = converted.workdir / f"golden-{profile}"
    if not directory.exists():
        extract_bundle(converted.bundles[profile], directory, [load_public_key(converted.public_key)])
    with np.load(directory / "golden.npz") as archive:
        return {name: archive[name] for name in archive.files}


def test_golden_io_uses_the_interface_dtypes(fp32: Converted) -> None:
    for profile in PROFILES:
        golden = _golden(fp32, profile)
        assert golden["ids"].dtype == np.int64, profile
        assert golden["top"].dtype == np.int64, profile
        np.testing.assert_array_equal(golden["top"], fp32.expected(golden["ids"])["top"], err_msg=profile)


def test_the_tflite_model_runs_int32_inside(sessions: dict[str, RuntimeSession]) -> None:
    """The premise: without the cast at the edge the Pi would need another client."""
    pi = sessions[PI]
    assert pi.runtime_dtypes == {"ids": "int32", "top": "int32"}  # type: ignore[attr-defined]
    assert sessions[JETSON].runtime_dtypes == {}  # type: ignore[attr-defined]
    assert sessions[INTEL].runtime_dtypes == {}  # type: ignore[attr-defined]


def test_every_session_takes_the_same_int64_array_and_agrees(
    fp32: Converted, sessions: dict[str, RuntimeSession]
) -> None:
    # Ids beyond the vocabulary (the model reduces them), below 2**24: OpenVINO's CPU plugin
    # computes this graph's integer Mod inexactly above that, whatever the bundle's interface.
    ids = np.random.default_rng(3).integers(0, 2**20, (5, SEQ), dtype=np.int64)
    expected = fp32.expected(ids)
    for profile, session in sessions.items():
        assert [(s.name, s.dtype) for s in session.inputs] == [("ids", "int64")]
        out = session.infer({"ids": ids})
        assert out["top"].dtype == np.int64, profile
        assert out["logits"].dtype == np.float32, profile
        np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-4, err_msg=profile)
        np.testing.assert_array_equal(out["top"], expected["top"], err_msg=profile)


def test_ids_at_the_ends_of_int32_are_exact_in_tflite(
    fp32: Converted, sessions: dict[str, RuntimeSession]
) -> None:
    ids = _ids(2, seed=8)
    ids[0, :4] = [INT32_MAX, -(2**31), INT32_MAX - 1, -(2**31) + 1]
    ids[1, :] = 2**30 + 7
    expected = fp32.expected(ids)
    for profile in (PI, JETSON):
        out = sessions[profile].infer({"ids": ids})
        np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-4, err_msg=profile)
        np.testing.assert_array_equal(out["top"], expected["top"], err_msg=profile)


def test_tflite_refuses_ids_outside_int32_that_onnx_answers(
    fp32: Converted, sessions: dict[str, RuntimeSession]
) -> None:
    ids = _ids(2, seed=4)
    ids[1, 3] = 2**32 + 5  # would wrap to 5 inside an int32 model; the source reduces it to 301
    expected = fp32.expected(ids)
    onnx = sessions[JETSON].infer({"ids": ids})
    np.testing.assert_allclose(onnx["logits"], expected["logits"], atol=1e-4)
    with pytest.raises(InvalidInput) as caught:
        sessions[PI].infer({"ids": ids})
    message = caught.value.message
    assert "'ids'" in message and "from 4294967301 to 4294967301" in message
    assert "[-2147483648, 2147483647]" in message
    # The session still serves in-range requests afterwards.
    np.testing.assert_array_equal(sessions[PI].infer({"ids": ids[:1]})["top"], expected["top"][:1])


def test_the_agent_serves_int64_on_every_device(fp32: Converted, tmp_path: Path) -> None:
    ids = _ids(1, seed=5)  # the bundles take [1, 32], as --input said
    expected = fp32.expected(ids)
    for profile in PROFILES:
        with LocalInference([fp32.bundles[profile]], trusted_keys=[fp32.public_key]) as local:
            metadata = local.metadata(NAME)
            assert [(t.name, t.datatype) for t in metadata.inputs] == [("ids", "INT64")], profile
            assert [(t.name, t.datatype) for t in metadata.outputs] == [
                ("logits", "FP32"),
                ("top", "INT64"),
            ], profile
            response = local.infer_response(NAME, {"ids": ids})
            datatypes = {output.name: output.datatype for output in response.outputs}
            assert datatypes == {"logits": "FP32", "top": "INT64"}, profile
            np.testing.assert_array_equal(response.as_dict()["top"], expected["top"], err_msg=profile)
            if profile == PI:
                with pytest.raises(InvalidRequest) as caught:
                    local.infer(NAME, {"ids": np.full((1, SEQ), 2**31, np.int64)})
                assert caught.value.status == "INVALID_ARGUMENT"
                assert "'ids'" in caught.value.message and "2147483648" in caught.value.message


def test_tritonclient_sends_int64_to_a_real_pi_agent(fp32: Converted, tmp_path: Path) -> None:
    """One client for the fleet: the same INT64 request to the TFLite and the ONNX device's agent."""
    ids = _ids(1, seed=6)
    expected = fp32.expected(ids)

    def request(values: np.ndarray) -> list[triton.InferInput]:
        tensor = triton.InferInput("ids", list(values.shape), "INT64")
        tensor.set_data_from_numpy(values)
        return [tensor]

    for profile in (PI, JETSON):
        with (
            running_agent([fp32.bundles[profile]], fp32.public_key, tmp_path / profile) as agent,
            triton.InferenceServerClient(agent.url) as client,
        ):
            metadata = client.get_model_metadata(NAME, as_json=True)
            assert metadata["inputs"][0]["datatype"] == "INT64", profile
            result = client.infer(NAME, request(ids))
            top = result.as_numpy("top")
            assert top is not None and top.dtype == np.int64, profile
            np.testing.assert_array_equal(top, expected["top"], err_msg=profile)
            logits = result.as_numpy("logits")
            assert logits is not None
            np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, err_msg=profile)
            if profile == PI:
                too_big = ids.copy()
                too_big[0, 0] = -(2**31) - 1
                with pytest.raises(InferenceServerException) as caught:
                    client.infer(NAME, request(too_big))
                assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value.message()
                text = str(caught.value.message())
                assert "'ids'" in text and "-2147483649" in text and "int32" in text
                # ... and the agent keeps serving.
                assert client.infer(NAME, request(ids)).as_numpy("top") is not None
        assert "Traceback" not in agent.log()


def test_the_report_says_where_a_tensor_runs_narrower(fp32: Converted) -> None:
    pi = fp32.report.profile(PI).chosen
    assert pi is not None
    assert IDS_NOTE in pi.runtime_notes
    assert any(
        note.startswith("top: served as INT64, computed as int32 inside TFLite") for note in pi.runtime_notes
    )
    for profile in (INTEL, JETSON):
        chosen = fp32.report.profile(profile).chosen
        assert chosen is not None
        assert not any("served as INT64" in note for note in chosen.runtime_notes), profile
    markdown = (fp32.workdir / "out" / "report.md").read_text()
    assert f"{PI}: runtime: {IDS_NOTE}" in markdown


def test_the_default_int8_plan_keeps_int64_too(tmp_path: Path) -> None:
    """The Pi's own plan (PT2E int8): ids stay int64 at the interface, and the answers follow fp32."""
    converted = _convert(tmp_path, (PI,), None)
    manifest = converted.manifest(PI)
    assert manifest.precision.value == "int8"
    assert [(s.name, s.dtype, s.quantization) for s in manifest.inputs] == [("ids", "int64", None)]
    assert [(s.name, s.dtype) for s in manifest.outputs] == [("logits", "float32"), ("top", "int64")]
    ids = _ids(16, seed=7)
    with LocalInference([converted.bundles[PI]], trusted_keys=[converted.public_key]) as local:
        top = np.concatenate([local.infer(NAME, {"ids": ids[i : i + 1]})["top"] for i in range(len(ids))])
    assert top.dtype == np.int64
    assert np.mean(top == converted.expected(ids)["top"]) >= 0.9
