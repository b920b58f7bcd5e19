"""Hardware profiles: the shipped YAML files, the schema's checks and the loader's errors."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hw_profiles import (
    BUILTIN_PROFILES_DIR,
    PROFILES_DIR_ENV,
    AcceleratorKind,
    Architecture,
    HardwareProfile,
    ModelFormat,
    Precision,
    ProfileError,
    RuntimeName,
    display_path,
    find_profiles,
    list_profiles,
    load_profile,
    parse_profile,
    profile_path,
)
from hw_profiles.loader import format_field_path

REQUIRED = [
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-orin-nano",
    "jetson-nano",
    "intel-x86-openvino",
    "coral-edgetpu",
    "generic-arm64",
    "generic-x86",
]
SHIPPED = sorted(path.stem for path in BUILTIN_PROFILES_DIR.glob("*.yaml"))


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILES_DIR_ENV, raising=False)


def builtin(name: str) -> HardwareProfile:
    return load_profile(BUILTIN_PROFILES_DIR / f"{name}.yaml")


def valid_profile_data(name: str = "my-board") -> dict[str, Any]:
    """A known-good profile (the Pi 5's) as plain data, renamed, for tests to break."""
    data = yaml.safe_load((BUILTIN_PROFILES_DIR / "raspberry-pi-5.yaml").read_text())
    data["name"] = name
    return data


def write_profile(directory: Path, data: dict[str, Any], file_name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (file_name or f"{data['name']}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def line_of(path: Path, prefix: str) -> int:
    """1-based number of the first line of ``path`` that starts with ``prefix``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith(prefix):
            return number
    raise AssertionError(f"no line starts with {prefix!r}")


# --- The shipped profiles ----------------------------------------------------------------------------


def test_the_required_profiles_ship() -> None:
    missing = sorted(set(REQUIRED) - set(SHIPPED))
    assert not missing, f"missing profiles: {missing}"
    assert len(SHIPPED) >= 8


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_is_consistent(name: str) -> None:
    profile = builtin(name)
    assert profile.name == name
    assert profile.description.strip()
    # The converter's default must be something the device can run.
    runtime = profile.runtime_for(profile.default_format)
    assert runtime.format == profile.default_format
    assert profile.threads <= profile.cpu.cores
    assert profile.max_model_mb <= profile.memory_mb
    assert profile.tolerance.max_accuracy_drop <= 1.0
    assert profile.notes, "every profile explains its choices in notes"


@pytest.mark.parametrize("name", SHIPPED)
def test_json_dump_round_trips(name: str) -> None:
    profile = builtin(name)
    assert HardwareProfile.model_validate(profile.model_dump(mode="json")) == profile


def test_raspberry_pi_4_has_no_dot_product_and_defaults_to_a_cpu_format() -> None:
    pi4 = builtin("raspberry-pi-4")
    assert pi4.architecture == Architecture.ARM64
    assert (pi4.cpu.model, pi4.cpu.cores, pi4.cpu.max_ghz) == ("Cortex-A72", 4, 1.8)
    assert pi4.cpu.has("neon")
    assert not pi4.cpu.has("dotprod")
    assert not pi4.cpu.has("fp16")
    assert pi4.accelerators == []
    assert pi4.default_format == ModelFormat.TFLITE
    assert pi4.default_precision in (Precision.FP32, Precision.INT8)
    assert ModelFormat.ONNX in pi4.formats
    assert pi4.runtime_for(ModelFormat.TFLITE).delegates[0] == "xnnpack"
    assert any("dot-product" in note for note in pi4.notes), "the precision choice is justified"


def test_raspberry_pi_5_has_dot_product_and_fp16_and_defaults_to_tflite_int8() -> None:
    pi5 = builtin("raspberry-pi-5")
    assert (pi5.cpu.model, pi5.cpu.cores, pi5.cpu.max_ghz) == ("Cortex-A76", 4, 2.4)
    assert pi5.cpu.has("dotprod")
    assert pi5.cpu.has("fp16")
    assert pi5.memory_mb == 8192
    assert (pi5.default_format, pi5.default_precision) == (ModelFormat.TFLITE, Precision.INT8)


def test_jetson_orin_nano_prefers_tensorrt_then_cuda_then_cpu() -> None:
    orin = builtin("jetson-orin-nano")
    assert (orin.cpu.model, orin.cpu.cores) == ("Cortex-A78AE", 6)
    assert orin.memory_mb == 8192
    runtime = orin.runtime_for(ModelFormat.ONNX)
    assert runtime.name == RuntimeName.ONNXRUNTIME
    assert runtime.execution_providers == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert (orin.default_format, orin.default_precision) == (ModelFormat.ONNX, Precision.FP16)
    assert Precision.INT8 in orin.precisions
    (gpu,) = orin.accelerators
    assert gpu.kind == AcceleratorKind.GPU
    assert "1024 CUDA cores" in gpu.name and "32 Tensor Cores" in gpu.name
    assert gpu.memory_mb is None, "the GPU shares the 8 GB with the CPU"


def test_jetson_nano_runs_fp16_without_int8() -> None:
    nano = builtin("jetson-nano")
    assert (nano.cpu.model, nano.cpu.cores) == ("Cortex-A57", 4)
    assert nano.memory_mb == 4096
    assert nano.default_precision == Precision.FP16
    assert Precision.INT8 not in nano.precisions
    (gpu,) = nano.accelerators
    assert "128 CUDA cores" in gpu.name
    assert Precision.INT8 not in gpu.precisions


def test_intel_openvino_has_vnni_and_prefers_npu_gpu_cpu() -> None:
    intel = builtin("intel-x86-openvino")
    assert intel.architecture == Architecture.X86_64
    assert intel.cpu.has("avx2")
    assert intel.cpu.has("avx512_vnni") or intel.cpu.has("avx_vnni")
    assert intel.runtime_for(ModelFormat.OPENVINO).devices == ["NPU", "GPU", "CPU"]
    assert (intel.default_format, intel.default_precision) == (ModelFormat.OPENVINO, Precision.INT8)
    assert {a.kind for a in intel.accelerators} == {AcceleratorKind.NPU, AcceleratorKind.GPU}


def test_coral_needs_full_integer_io_and_static_shapes() -> None:
    coral = builtin("coral-edgetpu")
    assert coral.quantization.full_integer_io
    assert coral.quantization.static_shapes
    assert set(coral.quantization.io_dtypes) <= {"int8", "uint8"}
    assert (coral.default_format, coral.default_precision) == (ModelFormat.TFLITE, Precision.INT8)
    assert coral.formats == [ModelFormat.TFLITE]
    assert coral.runtime_for(ModelFormat.TFLITE).delegates == ["edgetpu", "xnnpack"]
    (tpu,) = coral.accelerators
    assert tpu.kind == AcceleratorKind.TPU
    assert tpu.precisions == [Precision.INT8]
    assert tpu.peak_tops == 4


@pytest.mark.parametrize(
    ("name", "architecture"),
    [("generic-arm64", Architecture.ARM64), ("generic-x86", Architecture.X86_64)],
)
def test_generic_profiles_assume_only_a_baseline(name: str, architecture: Architecture) -> None:
    profile = builtin(name)
    assert profile.architecture == architecture
    assert profile.accelerators == []
    assert profile.default_precision == Precision.FP32
    assert not any(profile.cpu.has(f) for f in ("dotprod", "avx512_vnni", "avx_vnni"))


# --- Broken profiles: each error names the file, the field and the line ------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        del data[key]

    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate


def _rename_key(section: str, old: str, new: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data[section][new] = data[section].pop(old)

    return mutate


BROKEN: dict[str, tuple[Mutation, str, str]] = {
    # case: (mutation, field path in the message, text in the message)
    "missing field": (_delete("threads"), "threads", "Field required"),
    "wrong type": (_set("cpu.cores", "four"), "cpu.cores", "valid integer"),
    "not positive": (_set("cpu.cores", 0), "cpu.cores", "Input should be greater than 0"),
    "threads over cores": (_set("threads", 64), "threads", "threads (64) exceeds cpu.cores (4)"),
    "format without runtime": (_set("formats", ["tflite", "openvino"]), "formats", "['openvino']"),
    "typo in a key": (_rename_key("cpu", "cores", "corse"), "cpu.corse", "did you mean 'cores'"),
    "runtime runs another format": (_set("runtimes.0.format", "onnx"), "runtimes[0].format", "litert"),
    "option of another runtime": (
        _set("runtimes.1.delegates", ["xnnpack"]),
        "runtimes[1].delegates",
        "litert runtime only",
    ),
    "unknown cpu feature": (_set("cpu.features", ["neon", "dot-prod"]), "cpu.features", "'dotprod'"),
    "feature of another architecture": (_set("cpu.features", ["neon", "avx2"]), "cpu", "arm64"),
    "unknown precision": (_set("precisions", ["int4"]), "precisions[0]", "Input should be"),
    "duplicate format": (_set("formats", ["tflite", "tflite"]), "formats", "twice"),
    "model larger than memory": (_set("max_model_mb", 10**6), "max_model_mb", "memory_mb"),
    "full integer io without int8": (
        _all(
            _set("precisions", ["fp32"]),
            _set("quantization.full_integer_io", True),
            _set("quantization.io_dtypes", ["int8"]),
        ),
        "quantization",
        "needs 'int8' in precisions",
    ),
    "full integer io with float io": (
        _all(_set("quantization.full_integer_io", True), _set("quantization.io_dtypes", ["float32"])),
        "quantization.io_dtypes",
        "int8 or uint8",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_profile_names_its_file_field_and_line(case: str, tmp_path: Path) -> None:
    mutate, field, text = BROKEN[case]
    data = valid_profile_data()
    mutate(data)
    path = write_profile(tmp_path, data)

    with pytest.raises(ProfileError) as caught:
        load_profile(path)

    message = str(caught.value)
    assert f"my-board.yaml: {field}: " in message
    assert text in message
    problem = next(p for p in caught.value.problems if p.field == field)
    top_key = field.split(".")[0].split("[")[0]
    if top_key in data:
        # The line points into the part of the file the field lives in (the key itself, or its parent).
        assert problem.line is not None
        assert problem.line >= line_of(path, f"{top_key}:")
    else:
        assert problem.line is None, "a missing top-level field has no line to point at"


def test_the_line_is_the_line_of_the_bad_value(tmp_path: Path) -> None:
    data = valid_profile_data()
    data["cpu"]["cores"] = -2
    path = write_profile(tmp_path, data)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    line = line_of(path, "  cores:")
    assert str(caught.value).endswith(
        f"my-board.yaml: cpu.cores: Input should be greater than 0 (line {line})"
    )


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    data = valid_profile_data()
    data["cpu"]["cores"] = 0
    data["memory_mb"] = "lots"
    path = write_profile(tmp_path, data)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert [p.field for p in caught.value.problems] == ["cpu.cores", "memory_mb"]
    assert all(line.startswith(f"{display_path(path)}: ") for line in str(caught.value).splitlines())


def test_a_file_name_that_disagrees_with_the_name_is_refused(tmp_path: Path) -> None:
    path = write_profile(tmp_path, valid_profile_data("my-board"), file_name="other-board.yaml")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert "other-board.yaml: name: 'my-board' does not match the file name" in message
    assert f"(line {line_of(path, 'name:')})" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: my-board\ncpu: model: x\n", 2),
        ("name: my-board\n\tcpu: 4\n", 2),
        ("name: my-board\nthreads: 2\nthreads: 3\n", 3),  # a duplicate key would silently win otherwise
    ],
    ids=["nested mapping on one line", "tab indent", "duplicate key"],
)
def test_yaml_errors_name_the_file_and_line(text: str, line: int, tmp_path: Path) -> None:
    path = tmp_path / "my-board.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"{display_path(path)}: line {line}, column ")
    assert "invalid YAML" in str(caught.value)
    assert caught.value.problems[0].line == line


@pytest.mark.parametrize(("text", "expected"), [("", "empty"), ("- a\n- b\n", "not a list")])
def test_a_file_that_is_not_a_mapping_is_refused(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "my-board.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=expected):
        load_profile(path)


def test_a_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "nowhere.yaml")


def test_parse_profile_is_pure_and_checks_the_expected_name() -> None:
    text = yaml.safe_dump(valid_profile_data("my-board"))
    assert parse_profile(text).name == "my-board"
    with pytest.raises(ProfileError, match=re.escape("board.yaml: name: 'my-board' does not match")):
        parse_profile(text, source="board.yaml", expected_name="board")


@pytest.mark.parametrize(
    ("loc", "expected"),
    [(("cpu", "cores"), "cpu.cores"), (("runtimes", 0, "format"), "runtimes[0].format"), ((), "")],
)
def test_field_paths_read_like_yaml_paths(loc: tuple[int | str, ...], expected: str) -> None:
    assert format_field_path(loc) == expected


# --- The search path ----------------------------------------------------------------------------------


def test_profile_names_resolve_to_the_builtin_files() -> None:
    assert profile_path("raspberry-pi-5") == BUILTIN_PROFILES_DIR / "raspberry-pi-5.yaml"
    assert load_profile("raspberry-pi-5") == builtin("raspberry-pi-5")
    assert [p.name for p in list_profiles()] == SHIPPED


def test_an_unknown_name_lists_the_known_ones_and_suggests_the_closest() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("rasberry-pi-5")
    message = str(caught.value)
    assert "unknown hardware profile 'rasberry-pi-5'" in message
    assert "did you mean 'raspberry-pi-5'?" in message
    for name in SHIPPED:
        assert name in message
    assert caught.value.hint is not None and PROFILES_DIR_ENV in caught.value.hint


def test_extra_directories_come_first_and_can_shadow_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_profile(first, valid_profile_data("my-board"))
    shadow = valid_profile_data("raspberry-pi-5")
    shadow["description"] = "a site-specific Pi 5"
    write_profile(second, shadow)
    monkeypatch.setenv(PROFILES_DIR_ENV, os.pathsep.join([str(first), str(second)]))

    assert load_profile("my-board").name == "my-board"
    assert load_profile("raspberry-pi-5").description == "a site-specific Pi 5"
    assert profile_path("raspberry-pi-5") == second / "raspberry-pi-5.yaml"
    names = [p.name for p in list_profiles()]
    assert names == sorted({*SHIPPED, "my-board"})
    assert find_profiles()["generic-x86"] == BUILTIN_PROFILES_DIR / "generic-x86.yaml"


def test_a_profiles_dir_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROFILES_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ProfileError, match=f"{PROFILES_DIR_ENV} names .*missing.*not a directory"):
        list_profiles()


def test_list_profiles_of_one_directory_is_sorted_by_name(tmp_path: Path) -> None:
    for name in ("zeta-board", "alpha-board", "mid-board"):
        write_profile(tmp_path, valid_profile_data(name))
    assert [p.name for p in list_profiles(tmp_path)] == ["alpha-board", "mid-board", "zeta-board"]


def test_list_profiles_reports_every_broken_file(tmp_path: Path) -> None:
    good, bad_cores, bad_threads = (valid_profile_data(n) for n in ("good", "bad-cores", "bad-threads"))
    bad_cores["cpu"]["cores"] = 0
    bad_threads["threads"] = 99
    for data in (good, bad_cores, bad_threads):
        write_profile(tmp_path, copy.deepcopy(data))
    with pytest.raises(ProfileError) as caught:
        list_profiles(tmp_path)
    message = str(caught.value)
    assert "bad-cores.yaml: cpu.cores:" in message
    assert "bad-threads.yaml: threads:" in message
    assert "good.yaml" not in message


def test_importing_hw_profiles_stays_light() -> None:
    # The edge agent imports hw_profiles; it must not drag in the converter's heavy frameworks.
    heavy = ["torch", "tensorflow", "onnx", "nncf", "openvino"]
    code = (
        "import sys, hw_profiles; hw_profiles.list_profiles(); "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == ""
